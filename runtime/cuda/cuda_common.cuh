// cuda_common.cuh - what every CUDA source of the backend shares: error checks, the process-wide
// CUDA context (device, one stream, cuBLAS handle, the accounting device allocator, the op profiler),
// warp/block reductions and dtype loads. One stream for everything: kernels, copies and the
// stream-ordered allocator (cudaMallocAsync) are ordered by it, so freeing a tensor on the host while
// a kernel still reads it is safe (the free is queued behind the kernel).
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <type_traits>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/check.h"
#include "runtime/cuda/kernel_math.h"
#include "runtime/cuda/kv_select.h"
#include "runtime/hostdevice.h"

#define SKV_CUDA_CHECK(expr)                                                                       \
  do {                                                                                             \
    const cudaError_t skv_err_ = (expr);                                                           \
    if (skv_err_ != cudaSuccess) SKV_FAIL("CUDA error in {}: {}", #expr, cudaGetErrorString(skv_err_)); \
  } while (0)

#define SKV_CUBLAS_CHECK(expr)                                                                     \
  do {                                                                                             \
    const cublasStatus_t skv_st_ = (expr);                                                         \
    if (skv_st_ != CUBLAS_STATUS_SUCCESS)                                                          \
      SKV_FAIL("cuBLAS error in {}: {} ({})", #expr, cublasGetStatusName(skv_st_), cublasGetStatusString(skv_st_)); \
  } while (0)

// After every kernel launch: launch errors (bad configuration) surface at the op that caused them.
#define SKV_CUDA_LAUNCHED(name)                                                                     \
  do {                                                                                             \
    const cudaError_t skv_err_ = cudaGetLastError();                                               \
    if (skv_err_ != cudaSuccess) SKV_FAIL("CUDA kernel {} failed to launch: {}", name, cudaGetErrorString(skv_err_)); \
  } while (0)

namespace skv::cuda {

// Device memory through the accounting allocator: cudaMallocAsync from the device's default pool on
// the backend stream (release threshold = unlimited, so freed blocks are reused, not returned).
class CudaAllocator final : public Allocator {
 public:
  const char* name() const override { return "cuda"; }
  cudaStream_t stream = nullptr;

 protected:
  void* raw_allocate(size_t bytes) override;
  void raw_deallocate(void* p) override;
};

// Per-op timing for benchmarks (off by default): cudaEvents around each op, summed on collect().
struct OpRecord {
  std::string op;
  cudaEvent_t start, stop;
  double flops, bytes;
};
struct OpTotals {
  int64_t calls = 0;
  double seconds = 0, flops = 0, bytes = 0;
};

struct Context {
  int device = 0;
  cudaDeviceProp prop{};
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  CudaAllocator alloc;
  bool profiling = false;
  std::vector<OpRecord> records;
  // Pinned staging ring for small host->device copies (indices, positions, lengths, kept sets): a copy
  // from pageable memory would synchronise the stream first; from here it stays asynchronous. A region
  // is reused only after the stream was synchronised (when the ring wraps).
  char* staging = nullptr;
  size_t staging_cap = 0, staging_off = 0;
};

constexpr size_t kStagingBytes = size_t{16} << 20;
constexpr size_t kStagingMaxCopy = size_t{4} << 20;  // larger copies go straight from pageable memory

// Queues a host->device copy of n bytes on the backend stream; `src` may be freed when this returns.
void copy_to_device_async(void* dst, const void* src, size_t n);

// The process-wide context (created with the backend); throws when no device is visible.
Context& ctx();
inline cudaStream_t stream() { return ctx().stream; }

// Times the op between construction and destruction when profiling is on.
class OpTimer {
 public:
  OpTimer(const char* op, double flops, double bytes);
  ~OpTimer();
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  int64_t record_ = -1;  // index into Context::records, -1 when not profiling
};

// Shapes and pointers.
inline void check_cuda_tensor(const Tensor& t, const char* what) {
  SKV_CHECK(t.defined() && t.device() == Device::CUDA, "{}: expected a CUDA tensor, got {}", what,
            t.defined() ? fmt::format("{} on {}", t.describe(), device_name(t.device())) : "undefined");
}
inline void check_cuda_f32(const Tensor& t, const char* what) {
  check_cuda_tensor(t, what);
  SKV_CHECK(t.dtype() == DType::F32, "{}: expected F32, got {}", what, t.describe());
}
inline float* fptr(const Tensor& t) { return static_cast<float*>(t.raw()); }
inline unsigned grid1d(int64_t n) { return static_cast<unsigned>(kmath::elt_blocks(n)); }

// A small host array copied to a device workspace tensor (indices, positions, lengths). The copy is
// queued on the stream; the host vector may be freed when this returns.
template <class T>
Tensor upload_vector(const std::vector<T>& v, DType dt) {
  Tensor t = Tensor::empty({static_cast<int64_t>(v.size())}, dt, MemCategory::Workspace, &ctx().alloc, Device::CUDA);
  if (!v.empty()) copy_to_device_async(t.raw(), v.data(), v.size() * sizeof(T));
  return t;
}

// A host array of plain structs (segment tables) copied to a device workspace tensor, as upload_vector.
template <class T>
Tensor upload_structs(const std::vector<T>& v) {
  static_assert(std::is_trivially_copyable_v<T>, "upload_structs: plain structs only");
  Tensor t = Tensor::empty({static_cast<int64_t>(v.size() * sizeof(T))}, DType::U8, MemCategory::Workspace, &ctx().alloc,
                           Device::CUDA);
  if (!v.empty()) copy_to_device_async(t.raw(), v.data(), v.size() * sizeof(T));
  return t;
}

// Before launching `kernel` with `dynamic_bytes` of dynamic shared memory: counts the kernel's static
// shared memory too (kmath::smem_launch_class), fails with `what` when the sum exceeds the device's
// opt-in limit, and raises the kernel's dynamic limit when the sum passes the 48 KiB default.
void prepare_smem(const void* kernel, size_t dynamic_bytes, const char* what);

// ---- device helpers --------------------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `shared` holds 32 doubles. Contains __syncthreads: call from all threads.
__device__ __forceinline__ double block_sum_d(double v, double* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
  v = warp_sum_d(v);
  __syncthreads();  // `shared` may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  double t = lane < nwarps ? shared[lane] : 0.0;
  return warp_sum_d(t);
}

// Element loads for weights stored in F32, F16 or BF16 (the bits, converted with hostdevice.h).
__device__ __forceinline__ float load_as_f32(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load_as_f32(const uint16_t* p, int64_t i, DType dt) {
  return dt == DType::BF16 ? bf16_to_f32(p[i]) : f16_to_f32(p[i]);
}

}  // namespace skv::cuda
