// gemm.cu - linear layers through cuBLAS, and the reference GEMM / copy measurements of benchmarks.
// Row-major y[M,N] = x[M,K] . w[N,K]^T is the column-major product y^T = w . x^T, i.e. one cuBLAS call
// with op(w) = T. F32 weights use SGEMM in FP32 (CUBLAS_DEFAULT_MATH: no TF32), so parity runs compare
// like with like. F16/BF16 weights stay in half precision on the device (half the bytes, tensor cores):
// x is rounded to the weight dtype and cublasGemmEx accumulates in FP32. The bias is a separate
// row-broadcast add (memory-bound, small next to the GEMM).
#include <algorithm>
#include <climits>
#include <functional>
#include <vector>

#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_device.h"
#include "runtime/cuda/ops.h"

namespace skv::cuda {

namespace {

__global__ void add_bias_kernel(float* y, const float* b, int64_t n, int64_t N) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] += b[i % N];
}

cudaDataType_t cuda_type(DType dt) {
  switch (dt) {
    case DType::F32: return CUDA_R_32F;
    case DType::F16: return CUDA_R_16F;
    case DType::BF16: return CUDA_R_16BF;
    default: SKV_FAIL("linear: weights of dtype {} are not supported (use F32, F16 or BF16)", dtype_name(dt));
  }
}

void check_int(int64_t v, const char* what) {
  SKV_CHECK(v >= 0 && v <= INT_MAX, "linear: {} = {} exceeds cuBLAS's int range", what, v);
}

// Column-major C (m x n, ldc) = op(A) . op(B) for A, B of dtype `dt` (F32: SGEMM), C F32.
void gemm(cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k, const void* A, int64_t lda,
          const void* B, int64_t ldb, float* C, int64_t ldc, DType dt) {
  for (int64_t v : {m, n, k, lda, ldb, ldc}) check_int(v, "a GEMM dimension");
  const float one = 1.0f, zero = 0.0f;
  if (dt == DType::F32) {
    SKV_CUBLAS_CHECK(cublasSgemm(ctx().cublas, ta, tb, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k),
                                 &one, static_cast<const float*>(A), static_cast<int>(lda),
                                 static_cast<const float*>(B), static_cast<int>(ldb), &zero, C, static_cast<int>(ldc)));
  } else {
    const cudaDataType_t t = cuda_type(dt);
    SKV_CUBLAS_CHECK(cublasGemmEx(ctx().cublas, ta, tb, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k),
                                  &one, A, t, static_cast<int>(lda), B, t, static_cast<int>(ldb), &zero, C, CUDA_R_32F,
                                  static_cast<int>(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
}

}  // namespace

void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) {
  check_cuda_f32(x, "linear x");
  check_cuda_f32(y, "linear y");
  check_cuda_tensor(w, "linear weight");
  SKV_CHECK(w.ndim() == 2, "linear: weight must be 2-D, got {}", w.describe());
  const int64_t K = w.dim(1), N = w.dim(0);
  const int64_t M = N == 0 ? 0 : y.numel() / N;
  SKV_CHECK(x.dim(-1) == K && y.dim(-1) == N && x.numel() == M * K, "linear: x {} w {} y {}", x.describe(),
            w.describe(), y.describe());
  (void)cuda_type(w.dtype());
  if (M == 0 || N == 0) return;
  OpTimer timer("linear", 2.0 * M * N * K, static_cast<double>(w.nbytes() + x.nbytes() + y.nbytes()));
  if (K == 0) {
    SKV_CUDA_CHECK(cudaMemsetAsync(y.raw(), 0, y.nbytes(), stream()));
  } else if (w.dtype() == DType::F32) {
    gemm(CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, w.raw(), K, x.raw(), K, fptr(y), N, DType::F32);
  } else {
    Tensor xh = convert_to_half(x, w.dtype());
    gemm(CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, w.raw(), K, xh.raw(), K, fptr(y), N, w.dtype());
  }
  if (bias) {
    check_cuda_f32(*bias, "linear bias");
    SKV_CHECK(bias->numel() == N, "linear: bias {} for N={}", bias->describe(), N);
    add_bias_kernel<<<grid1d(M * N), kmath::kEltThreads, 0, stream()>>>(fptr(y), fptr(*bias), M * N, N);
    SKV_CUDA_LAUNCHED("add_bias");
  }
}

void sgemm_nn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
              int64_t ldc) {
  if (M == 0 || N == 0) return;
  // Row-major C = A . B  <=>  column-major C^T (N x M) = B^T . A^T, where the row-major B and A are
  // already the column-major B^T and A^T.
  gemm(CUBLAS_OP_N, CUBLAS_OP_N, N, M, K, B, ldb, A, lda, C, ldc, DType::F32);
}

// ---- reference measurements ---------------------------------------------------------------------------
namespace {

double time_best(int repeats, const std::function<void()>& fn) {
  cudaEvent_t a, b;
  SKV_CUDA_CHECK(cudaEventCreate(&a));
  SKV_CUDA_CHECK(cudaEventCreate(&b));
  fn();  // warm-up (cuBLAS heuristics, pool growth)
  double best = 1e30;
  for (int r = 0; r < std::max(1, repeats); ++r) {
    SKV_CUDA_CHECK(cudaEventRecord(a, stream()));
    fn();
    SKV_CUDA_CHECK(cudaEventRecord(b, stream()));
    SKV_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    SKV_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    best = std::min(best, ms / 1e3);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return best;
}

}  // namespace

double measure_copy_gbs(int64_t bytes, int repeats) {
  Allocator& al = ctx().alloc;
  Tensor a = Tensor::empty({bytes}, DType::U8, MemCategory::Workspace, &al, Device::CUDA);
  Tensor b = Tensor::empty({bytes}, DType::U8, MemCategory::Workspace, &al, Device::CUDA);
  SKV_CUDA_CHECK(cudaMemsetAsync(a.raw(), 1, static_cast<size_t>(bytes), stream()));
  const double s = time_best(repeats, [&] {
    SKV_CUDA_CHECK(cudaMemcpyAsync(b.raw(), a.raw(), static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice, stream()));
  });
  return 2.0 * static_cast<double>(bytes) / s / 1e9;
}

double measure_gemm_tflops(DType dt, int n, int repeats) {
  Allocator& al = ctx().alloc;
  Tensor A = Tensor::empty({n, n}, dt, MemCategory::Workspace, &al, Device::CUDA);
  Tensor B = Tensor::empty({n, n}, dt, MemCategory::Workspace, &al, Device::CUDA);
  Tensor C = Tensor::empty({n, n}, DType::F32, MemCategory::Workspace, &al, Device::CUDA);
  {  // values in [-0.5, 0.5] (not zeros: the clock state under load should be a real one)
    std::vector<float> f(static_cast<size_t>(n) * n);
    for (size_t i = 0; i < f.size(); ++i) f[i] = static_cast<float>((i * 2654435761u) % 1001) / 1000.0f - 0.5f;
    std::vector<uint16_t> h(dt == DType::F32 ? 0 : f.size());
    for (size_t i = 0; i < h.size(); ++i) h[i] = dt == DType::BF16 ? f32_to_bf16(f[i]) : f32_to_f16(f[i]);
    const void* src = dt == DType::F32 ? static_cast<const void*>(f.data()) : static_cast<const void*>(h.data());
    // on the backend stream: memory from cudaMallocAsync is ordered by it
    SKV_CUDA_CHECK(cudaMemcpyAsync(A.raw(), src, A.nbytes(), cudaMemcpyHostToDevice, stream()));
    SKV_CUDA_CHECK(cudaMemcpyAsync(B.raw(), src, B.nbytes(), cudaMemcpyHostToDevice, stream()));
    SKV_CUDA_CHECK(cudaStreamSynchronize(stream()));
  }
  const double s = time_best(repeats, [&] {
    gemm(CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, A.raw(), n, B.raw(), n, fptr(C), n, dt);
  });
  return 2.0 * n * static_cast<double>(n) * n / s / 1e12;
}

}  // namespace skv::cuda
