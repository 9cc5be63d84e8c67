// backend_cuda.cu - the CUDA backend: context, device allocator, op profiler, and the small ops
// (element-wise, norms, layout changes, KV-cache moves). GEMM, attention and the image ops live in
// gemm.cu, attention.cu and image.cu. Kernels are written to be read: one thread per output element
// (grid-stride loops) unless a row reduction needs a block; the index math they share with the CPU
// backend is in runtime/hostdevice.h and runtime/cuda/kernel_math.h, where CPU tests pin it down.
// Numerics follow the CPU reference: row statistics of the norms accumulate in double, as there.
#include <cstdlib>
#include <cstring>
#include <string>

#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_device.h"
#include "runtime/cuda/kv_select.h"
#include "runtime/cuda/ops.h"

namespace skv::cuda {

// ---- allocator ------------------------------------------------------------------------------------
void* CudaAllocator::raw_allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  void* p = nullptr;
  const cudaError_t e = cudaMallocAsync(&p, bytes, stream);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error state of a failed allocation
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    SKV_FAIL("out of CUDA memory allocating {} ({} free of {} on the device; {} in use by scalekv)",
             format_bytes(static_cast<int64_t>(bytes)), format_bytes(static_cast<int64_t>(free_b)),
             format_bytes(static_cast<int64_t>(total_b)), format_bytes(stats().total_current));
  }
  return p;
}

void CudaAllocator::raw_deallocate(void* p) {
  if (p) cudaFreeAsync(p, stream);  // errors here cannot be reported from a destructor; the next op sees them
}

// ---- context --------------------------------------------------------------------------------------
Context& ctx() {
  static Context* c = [] {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess || n == 0) {
      cudaGetLastError();
      SKV_FAIL("no CUDA device is visible ({})", err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
    }
    auto* x = new Context();
    // The device current now: the launcher made its choice current (parallel/topology.h
    // device_for_rank) before the first CUDA op; one source of truth, no second guess from the env.
    SKV_CUDA_CHECK(cudaGetDevice(&x->device));
    SKV_CUDA_CHECK(cudaSetDevice(x->device));
    SKV_CUDA_CHECK(cudaGetDeviceProperties(&x->prop, x->device));
    SKV_CUDA_CHECK(cudaStreamCreateWithFlags(&x->stream, cudaStreamNonBlocking));
    cudaMemPool_t pool;
    SKV_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, x->device));
    uint64_t keep = UINT64_MAX;  // keep freed blocks in the pool: no cudaFree/cudaMalloc churn per scale
    SKV_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    x->alloc.stream = x->stream;
    SKV_CUBLAS_CHECK(cublasCreate(&x->cublas));
    SKV_CUBLAS_CHECK(cublasSetStream(x->cublas, x->stream));
    SKV_CUBLAS_CHECK(cublasSetMathMode(x->cublas, CUBLAS_DEFAULT_MATH));  // FP32 stays FP32 (no TF32)
    SKV_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&x->staging), kStagingBytes, cudaHostAllocDefault));
    x->staging_cap = kStagingBytes;
    return x;
  }();
  return *c;
}

void prepare_smem(const void* kernel, size_t dynamic_bytes, const char* what) {
  cudaFuncAttributes attr{};
  SKV_CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
  const int64_t optin = static_cast<int64_t>(ctx().prop.sharedMemPerBlockOptin);
  const int c = kmath::smem_launch_class(static_cast<int64_t>(dynamic_bytes), static_cast<int64_t>(attr.sharedSizeBytes), optin);
  SKV_CHECK(c >= 0, "{}: {} bytes of shared memory ({} dynamic + {} static) exceed this device's {} per block", what,
            dynamic_bytes + attr.sharedSizeBytes, dynamic_bytes, attr.sharedSizeBytes, optin);
  if (c == 1)
    SKV_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(dynamic_bytes)));
}

void copy_to_device_async(void* dst, const void* src, size_t n) {
  Context& c = ctx();
  if (n == 0) return;
  if (n > kStagingMaxCopy || c.staging == nullptr) {  // pageable: the driver stages it before returning
    SKV_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, c.stream));
    return;
  }
  if (c.staging_off + n > c.staging_cap) {  // wrap: every earlier copy out of the ring must have run
    SKV_CUDA_CHECK(cudaStreamSynchronize(c.stream));
    c.staging_off = 0;
  }
  char* p = c.staging + c.staging_off;
  std::memcpy(p, src, n);
  c.staging_off += (n + 255) / 256 * 256;
  SKV_CUDA_CHECK(cudaMemcpyAsync(dst, p, n, cudaMemcpyHostToDevice, c.stream));
}

OpTimer::OpTimer(const char* op, double flops, double bytes) {
  Context& c = ctx();
  if (!c.profiling) return;
  OpRecord r{op, nullptr, nullptr, flops, bytes};
  SKV_CUDA_CHECK(cudaEventCreate(&r.start));
  SKV_CUDA_CHECK(cudaEventCreate(&r.stop));
  SKV_CUDA_CHECK(cudaEventRecord(r.start, c.stream));
  c.records.push_back(r);
  record_ = static_cast<int64_t>(c.records.size()) - 1;
}

OpTimer::~OpTimer() {
  Context& c = ctx();
  if (record_ >= 0 && record_ < static_cast<int64_t>(c.records.size())) cudaEventRecord(c.records[record_].stop, c.stream);
}

// ---- kernels: element-wise -------------------------------------------------------------------------
namespace {

#define SKV_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); i += static_cast<int64_t>(gridDim.x) * blockDim.x)

__global__ void fill_kernel(float* p, int64_t n, float v) {
  SKV_GRID_STRIDE(i, n) p[i] = v;
}

__global__ void modulate_kernel(const float* x, const float* sc, const float* sh, float* y, int64_t n, int64_t TC,
                                int64_t C) {
  SKV_GRID_STRIDE(i, n) {
    const int64_t rc = (i / TC) * C + i % C;
    y[i] = x[i] * (sc[rc] + 1.0f) + sh[rc];
  }
}

__global__ void add_gated_kernel(float* x, const float* y, const float* g, int64_t n, int64_t TC, int64_t C) {
  SKV_GRID_STRIDE(i, n) {
    if (g)
      x[i] += y[i] * g[(i / TC) * C + i % C];
    else
      x[i] += y[i];
  }
}

__global__ void add_kernel(const float* a, const float* b, float* y, int64_t n, int64_t m) {
  SKV_GRID_STRIDE(i, n) y[i] = a[i] + b[i % m];
}

__global__ void scale_kernel(float* x, int64_t n, float s) {
  SKV_GRID_STRIDE(i, n) x[i] *= s;
}

__global__ void axpby_kernel(const float* x, float a, const float* y, float b, float* o, int64_t n) {
  SKV_GRID_STRIDE(i, n) o[i] = x[i] * a + y[i] * b;
}

__global__ void gelu_kernel(float* x, int64_t n) {
  SKV_GRID_STRIDE(i, n) x[i] = gelu_tanh(x[i]);
}

__global__ void silu_kernel(const float* x, float* y, int64_t n) {
  SKV_GRID_STRIDE(i, n) y[i] = silu(x[i]);
}

// y[b] = x[b]^T through a 32x32 shared tile (coalesced reads and writes). Block 32x8.
__global__ void transpose_kernel(const float* x, float* y, int64_t M, int64_t N) {
  __shared__ float tile[32][33];
  const int64_t b = blockIdx.z;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * 32, n0 = static_cast<int64_t>(blockIdx.x) * 32;
  const float* xb = x + b * M * N;
  float* yb = y + b * M * N;
  for (int r = threadIdx.y; r < 32; r += 8) {
    const int64_t m = m0 + r, n = n0 + threadIdx.x;
    if (m < M && n < N) tile[r][threadIdx.x] = xb[m * N + n];
  }
  __syncthreads();
  for (int r = threadIdx.y; r < 32; r += 8) {
    const int64_t n = n0 + r, m = m0 + threadIdx.x;
    if (m < M && n < N) yb[n * M + m] = tile[threadIdx.x][r];
  }
}

// ---- kernels: row reductions (one block of kRowThreads per row) ----------------------------------------
constexpr int kRowThreads = 256;

__global__ void layer_norm_kernel(const float* x, const float* w, const float* b, float eps, float* y, int64_t C) {
  __shared__ double red[32];
  const float* r = x + blockIdx.x * C;
  float* o = y + blockIdx.x * C;
  double s = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += r[c];
  const double mean = block_sum_d(s, red) / static_cast<double>(C);
  double v = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) v += (r[c] - mean) * (r[c] - mean);
  const double var = block_sum_d(v, red) / static_cast<double>(C);
  const float rstd = static_cast<float>(1.0 / sqrt(var + eps)), mu = static_cast<float>(mean);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    float val = (r[c] - mu) * rstd;
    if (w) val *= w[c];
    if (b) val += b[c];
    o[c] = val;
  }
}

__global__ void rms_norm_kernel(const float* x, const float* w, float eps, float* y, int64_t C) {
  __shared__ double red[32];
  const float* r = x + blockIdx.x * C;
  float* o = y + blockIdx.x * C;
  double s = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += static_cast<double>(r[c]) * r[c];
  const double ss = block_sum_d(s, red);
  const float rs = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(C) + eps));
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) o[c] = r[c] * rs * (w ? w[c] : 1.0f);
}

// softmax over a row, CPU semantics: max, exp(x - max), times 1/sum; a row of -inf becomes zeros.
__global__ void softmax_kernel(float* x, int64_t C) {
  __shared__ float red[32];
  float* p = x + blockIdx.x * C;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
  float mx = -INFINITY;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) mx = fmaxf(mx, p[c]);
  mx = warp_max(mx);
  if (lane == 0) red[warp] = mx;
  __syncthreads();
  mx = warp_max(lane < nwarps ? red[lane] : -INFINITY);
  __syncthreads();
  if (mx == -INFINITY) {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) p[c] = 0.0f;
    return;
  }
  float s = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float e = expf(p[c] - mx);
    p[c] = e;
    s += e;
  }
  s = warp_sum(s);
  if (lane == 0) red[warp] = s;
  __syncthreads();
  s = warp_sum(lane < nwarps ? red[lane] : 0.0f);
  const float inv = 1.0f / s;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) p[c] *= inv;
}

// One warp per (row-head, token) vector of D: x = x / max(||x||, 1e-12) * head_scale[h].
__global__ void l2norm_kernel(float* x, const float* hs, int64_t rows, int64_t L, int64_t H, int64_t D) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  float* v = x + row * D;
  float ss = 0.0f;
  for (int64_t d = lane; d < D; d += 32) ss += v[d] * v[d];
  ss = warp_sum(ss);
  const float inv = 1.0f / fmaxf(sqrtf(ss), 1e-12f);
  const float s = hs ? hs[(row / L) % H] : 1.0f;
  for (int64_t d = lane; d < D; d += 32) v[d] = v[d] * inv * s;
}

// ---- kernels: layout ----------------------------------------------------------------------------------
// q/k/v [R, H, L, D] from qkv [R, L, 3, H, D] (+ biases [H*D]); one thread per output element of q.
__global__ void split_qkv_kernel(const float* qkv, const float* qb, const float* kb, const float* vb, float* q, float* k,
                                 float* v, int64_t R, int64_t H, int64_t L, int64_t D) {
  const int64_t n = R * H * L * D;
  SKV_GRID_STRIDE(o, n) {
    const int64_t d = o % D, l = (o / D) % L, h = (o / (D * L)) % H, r = o / (D * L * H);
    const float* row = qkv + (r * L + l) * 3 * H * D;
    const int64_t hd = h * D + d;
    q[o] = row[hd] + (qb ? qb[hd] : 0.0f);
    k[o] = row[H * D + hd] + (kb ? kb[hd] : 0.0f);
    v[o] = row[2 * H * D + hd] + (vb ? vb[hd] : 0.0f);
  }
}

// y [R, H, L, D] from x [R, L, H*D] (+ bias), or back (inverse = true, no bias).
__global__ void heads_kernel(const float* x, const float* bias, float* y, int64_t R, int64_t H, int64_t L, int64_t D,
                             bool inverse) {
  const int64_t n = R * H * L * D;
  SKV_GRID_STRIDE(o, n) {
    const int64_t d = o % D, l = (o / D) % L, h = (o / (D * L)) % H, r = o / (D * L * H);
    const int64_t flat = (r * L + l) * H * D + h * D + d;  // index in [R, L, H*D]
    if (inverse)
      y[flat] = x[o];
    else
      y[o] = x[flat] + (bias ? bias[h * D + d] : 0.0f);
  }
}

// Rotate pairs (2i, 2i+1) of token l by cos/sin[pos[l], i]; cs = [2, P, half].
__global__ void rope_kernel(float* x, const float* cs, const int64_t* pos, int64_t RH, int64_t L, int64_t half,
                            int64_t P) {
  const int64_t n = RH * L * half;
  SKV_GRID_STRIDE(t, n) {
    const int64_t i = t % half, l = (t / half) % L, rh = t / (half * L);
    float* v = x + (rh * L + l) * 2 * half;
    const float c = cs[pos[l] * half + i], s = cs[(P + pos[l]) * half + i];
    const float a = v[2 * i], b = v[2 * i + 1];
    v[2 * i] = a * c - b * s;
    v[2 * i + 1] = b * c + a * s;
  }
}

// y[i, :] = table[idx[i], :], table F32 / F16 / BF16.
__global__ void embedding_kernel(const void* table, DType dt, const int64_t* idx, float* y, int64_t n, int64_t C) {
  SKV_GRID_STRIDE(t, n * C) {
    const int64_t i = t / C, c = t % C, src = idx[i] * C + c;
    y[t] = dt == DType::F32 ? static_cast<const float*>(table)[src]
                            : load_as_f32(static_cast<const uint16_t*>(table), src, dt);
  }
}

__global__ void to_dtype_kernel(const float* x, uint16_t* y, int64_t n, DType dt) {
  SKV_GRID_STRIDE(i, n) y[i] = dt == DType::BF16 ? f32_to_bf16(x[i]) : f32_to_f16(x[i]);
}

// ---- kernels: KV moves --------------------------------------------------------------------------------
// In-place compaction, one block per (row, head); see kmath::kGatherTile for why it is race-free.
// U is the copy unit (4 or 1 bytes); `units` = units per token vector. kept_stride = n, or 0 when one kept
// list is shared by every (row, head).
template <class U>
__global__ void gather_tokens_kernel(U* store, int64_t hist_len, int64_t cap, const U* cur, int64_t Lc,
                                     const int32_t* kept, int64_t kept_stride, int64_t n,
                                     int64_t units) {
  extern __shared__ __align__(16) unsigned char gather_smem[];
  U* buf = reinterpret_cast<U*>(gather_smem);  // [kGatherTile][units]
  const int64_t rh = blockIdx.x;
  const int32_t* kp = kept + rh * kept_stride;
  U* st = store + rh * cap * units;
  const U* cu = cur + rh * Lc * units;
  for (int64_t j0 = 0; j0 < n; j0 += kmath::kGatherTile) {
    const int64_t nt = n - j0 < kmath::kGatherTile ? n - j0 : kmath::kGatherTile;
    for (int64_t e = threadIdx.x; e < nt * units; e += blockDim.x) {
      const int64_t j = j0 + e / units, u = e % units, i = kp[j];
      buf[e] = i < hist_len ? st[i * units + u] : cu[(i - hist_len) * units + u];
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < nt * units; e += blockDim.x) {
      const int64_t j = j0 + e / units;
      st[j * units + e % units] = buf[e];
    }
    __syncthreads();
  }
}


// One extent of a store (gather_extents): the store's tokens [first, next extent's first), (row, head) rh's
// token t at base + (rh * cap + t - first) tokens (base already points at the extent's start).
struct GatherExtent {
  unsigned char* base;
  int64_t first, cap;
};

// gather_extents (runtime/backend.h): gather_tokens_kernel's tiles (kernel_math.h says why they make the
// in-place move safe), with the address of each token of a tile looked up once in the extent table (a store
// has a handful of extents: a linear walk) and kept in shared memory for the copy.
template <class U>
__global__ void gather_extents_kernel(const GatherExtent* ext, int next, int64_t hist_len, const U* cur, int64_t Lc,
                                      const int32_t* kept, int64_t kept_stride, int64_t first, int64_t n,
                                      int64_t units) {
  extern __shared__ __align__(16) unsigned char gather_ext_smem[];
  U* buf = reinterpret_cast<U*>(gather_ext_smem);  // [kGatherTile][units]
  __shared__ U* dst[kmath::kGatherTile];
  __shared__ const U* src[kmath::kGatherTile];
  const int64_t rh = blockIdx.x;
  const int32_t* kp = kept + rh * kept_stride;
  auto token = [&](int64_t t) {
    int e = 0;
    while (e + 1 < next && t >= ext[e + 1].first) ++e;
    return reinterpret_cast<U*>(ext[e].base) + (rh * ext[e].cap + (t - ext[e].first)) * units;
  };
  for (int64_t j0 = first; j0 < n; j0 += kmath::kGatherTile) {
    const int64_t nt = n - j0 < kmath::kGatherTile ? n - j0 : kmath::kGatherTile;
    if (threadIdx.x < nt) {
      const int64_t j = j0 + threadIdx.x, i = kp[j];
      dst[threadIdx.x] = token(j);
      src[threadIdx.x] = i < hist_len ? token(i) : cur + (rh * Lc + (i - hist_len)) * units;
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < nt * units; e += blockDim.x) buf[e] = src[e / units][e % units];
    __syncthreads();
    for (int64_t e = threadIdx.x; e < nt * units; e += blockDim.x) dst[e / units][e % units] = buf[e];
    __syncthreads();  // the tile's pointers are rewritten next
  }
}
}  // namespace

// ---- the backend ------------------------------------------------------------------------------------
namespace {

void same_numel(const Tensor& a, const Tensor& b, const char* what) {
  SKV_CHECK(a.numel() == b.numel(), "{}: {} and {} differ in size", what, a.describe(), b.describe());
}

void launch_gather(Tensor& store, int64_t hist_len, const Tensor& cur, int64_t Lc, const Tensor& kept,
                          int64_t kept_stride, int64_t n) {
  const int64_t RH = store.dim(0) * store.dim(1), cap = store.dim(2), D = store.dim(3);
  if (n == 0 || RH == 0 || D == 0) return;
  SKV_CHECK(RH <= 0x7fffffff, "gather: {} rows x heads is too many for one launch", RH);
  const int64_t bytes = D * static_cast<int64_t>(dtype_size(store.dtype()));
  OpTimer t("kv_move", 0, 2.0 * static_cast<double>(RH * n * bytes));
  const bool words = bytes % 4 == 0 && reinterpret_cast<uintptr_t>(store.raw()) % 4 == 0 &&
                     (Lc == 0 || reinterpret_cast<uintptr_t>(cur.raw()) % 4 == 0);
  const int64_t units = words ? bytes / 4 : bytes;
  const size_t smem = static_cast<size_t>(kmath::kGatherTile * bytes);
  SKV_CHECK(smem <= 48 * 1024, "gather: token vectors of {} bytes exceed the kernel's tile", bytes);
  const void* cur_p = Lc > 0 ? cur.raw() : store.raw();  // cur is never read when every kept index < hist_len
  if (words)
    gather_tokens_kernel<uint32_t><<<static_cast<unsigned>(RH), 256, smem, stream()>>>(
        static_cast<uint32_t*>(store.raw()), hist_len, cap, static_cast<const uint32_t*>(cur_p), Lc,
        kept.data<int32_t>(), kept_stride, n, units);
  else
    gather_tokens_kernel<uint8_t><<<static_cast<unsigned>(RH), 256, smem, stream()>>>(
        static_cast<uint8_t*>(store.raw()), hist_len, cap, static_cast<const uint8_t*>(cur_p), Lc,
        kept.data<int32_t>(), kept_stride, n, units);
  SKV_CUDA_LAUNCHED("gather");
}

}  // namespace

class CudaBackend final : public Backend {
 public:
  CudaBackend() { (void)ctx(); }
  Device device() const override { return Device::CUDA; }
  std::string name() const override { return fmt::format("cuda ({})", ctx().prop.name); }
  Allocator& allocator() override { return ctx().alloc; }
  int device_ordinal() const override { return ctx().device; }
  void* native_stream() const override { return ctx().stream; }
  bool device_memory_info(int64_t* free_bytes, int64_t* total_bytes) const override {
    size_t f = 0, t = 0;
    SKV_CUDA_CHECK(cudaStreamSynchronize(ctx().stream));
    SKV_CUDA_CHECK(cudaMemGetInfo(&f, &t));
    *free_bytes = static_cast<int64_t>(f);
    *total_bytes = static_cast<int64_t>(t);
    return true;
  }

  Tensor upload(const Tensor& host, MemCategory cat) override {
    SKV_CHECK(host.device() == Device::CPU, "upload: {} is already on {}", host.describe(), device_name(host.device()));
    Tensor t = Tensor::empty(host.shape(), host.dtype(), cat, &ctx().alloc, Device::CUDA);
    copy_to_device_async(t.raw(), host.raw(), host.nbytes());
    return t;
  }
  Tensor download(const Tensor& t) override {
    if (t.device() == Device::CPU) return t.clone();
    Tensor h = Tensor::empty(t.shape(), t.dtype());
    if (t.nbytes() > 0) SKV_CUDA_CHECK(cudaMemcpyAsync(h.raw(), t.raw(), t.nbytes(), cudaMemcpyDeviceToHost, stream()));
    SKV_CUDA_CHECK(cudaStreamSynchronize(stream()));
    return h;
  }
  void copy(const Tensor& src, Tensor& dst) override {
    SKV_CHECK(src.nbytes() == dst.nbytes(), "copy: {} -> {} sizes differ", src.describe(), dst.describe());
    if (src.nbytes() > 0) SKV_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDefault, stream()));
  }
  void fill(Tensor& t, float v) override {
    check_cuda_tensor(t, "fill");
    if (t.numel() == 0) return;
    if (t.dtype() == DType::F32 && v != 0.0f) {
      fill_kernel<<<grid1d(t.numel()), kmath::kEltThreads, 0, stream()>>>(fptr(t), t.numel(), v);
      SKV_CUDA_LAUNCHED("fill");
    } else {
      SKV_CHECK(v == 0.0f, "fill: only zero fill for {}", t.describe());
      SKV_CUDA_CHECK(cudaMemsetAsync(t.raw(), 0, t.nbytes(), stream()));
    }
  }
  void synchronize() override { SKV_CUDA_CHECK(cudaStreamSynchronize(stream())); }

  void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) override { cuda::linear(x, w, bias, y); }

  void layer_norm(const Tensor& x, const Tensor* w, const Tensor* b, float eps, Tensor& y) override {
    check_cuda_f32(x, "layer_norm x");
    check_cuda_f32(y, "layer_norm y");
    same_numel(x, y, "layer_norm");
    const int64_t C = x.dim(-1), M = C == 0 ? 0 : x.numel() / C;
    if (M == 0) return;
    OpTimer t("norm", 0, 2.0 * x.nbytes());
    layer_norm_kernel<<<static_cast<unsigned>(M), kRowThreads, 0, stream()>>>(fptr(x), w ? fptr(*w) : nullptr,
                                                                               b ? fptr(*b) : nullptr, eps, fptr(y), C);
    SKV_CUDA_LAUNCHED("layer_norm");
  }
  void rms_norm(const Tensor& x, const Tensor* w, float eps, Tensor& y) override {
    check_cuda_f32(x, "rms_norm x");
    check_cuda_f32(y, "rms_norm y");
    same_numel(x, y, "rms_norm");
    const int64_t C = x.dim(-1), M = C == 0 ? 0 : x.numel() / C;
    if (M == 0) return;
    OpTimer t("norm", 0, 2.0 * x.nbytes());
    rms_norm_kernel<<<static_cast<unsigned>(M), kRowThreads, 0, stream()>>>(fptr(x), w ? fptr(*w) : nullptr, eps,
                                                                             fptr(y), C);
    SKV_CUDA_LAUNCHED("rms_norm");
  }
  void modulate(const Tensor& x, const Tensor& scale, const Tensor& shift, Tensor& y) override {
    check_cuda_f32(x, "modulate x");
    const int64_t R = x.dim(0), C = x.dim(-1), n = x.numel();
    SKV_CHECK(scale.numel() == R * C && shift.numel() == R * C && y.numel() == n, "modulate: x {} scale {} shift {}",
              x.describe(), scale.describe(), shift.describe());
    if (n == 0) return;
    OpTimer t("elementwise", 0, 2.0 * x.nbytes());
    modulate_kernel<<<grid1d(n), kmath::kEltThreads, 0, stream()>>>(fptr(x), fptr(scale), fptr(shift), fptr(y), n,
                                                                     n / R, C);
    SKV_CUDA_LAUNCHED("modulate");
  }
  void add_gated(Tensor& x, const Tensor& y, const Tensor* gate) override {
    check_cuda_f32(x, "add_gated x");
    same_numel(x, y, "add_gated");
    const int64_t R = x.dim(0), C = x.dim(-1), n = x.numel();
    if (gate) SKV_CHECK(gate->numel() == R * C, "add_gated: gate {} for x {}", gate->describe(), x.describe());
    if (n == 0) return;
    OpTimer t("elementwise", 0, 3.0 * x.nbytes());
    add_gated_kernel<<<grid1d(n), kmath::kEltThreads, 0, stream()>>>(fptr(x), fptr(y), gate ? fptr(*gate) : nullptr, n,
                                                                      n / R, C);
    SKV_CUDA_LAUNCHED("add_gated");
  }
  void add(const Tensor& a, const Tensor& b, Tensor& y) override {
    check_cuda_f32(a, "add a");
    const int64_t n = a.numel(), m = b.numel();
    SKV_CHECK(m > 0 && n % m == 0 && y.numel() == n, "add: a {} b {} y {}", a.describe(), b.describe(), y.describe());
    if (n == 0) return;
    OpTimer t("elementwise", 0, 3.0 * a.nbytes());
    add_kernel<<<grid1d(n), kmath::kEltThreads, 0, stream()>>>(fptr(a), fptr(b), fptr(y), n, m);
    SKV_CUDA_LAUNCHED("add");
  }
  void scale(Tensor& x, float s) override {
    check_cuda_f32(x, "scale");
    if (x.numel() == 0) return;
    scale_kernel<<<grid1d(x.numel()), kmath::kEltThreads, 0, stream()>>>(fptr(x), x.numel(), s);
    SKV_CUDA_LAUNCHED("scale");
  }
  void axpby(const Tensor& x, float a, const Tensor& y, float b, Tensor& out) override {
    SKV_CHECK(x.numel() == y.numel() && out.numel() == x.numel(), "axpby: x {} y {} out {}", x.describe(),
              y.describe(), out.describe());
    check_cuda_f32(x, "axpby x");
    if (x.numel() == 0) return;
    axpby_kernel<<<grid1d(x.numel()), kmath::kEltThreads, 0, stream()>>>(fptr(x), a, fptr(y), b, fptr(out), x.numel());
    SKV_CUDA_LAUNCHED("axpby");
  }
  void transpose_last2(const Tensor& x, Tensor& y) override {
    check_cuda_f32(x, "transpose_last2 x");
    const int64_t M = x.dim(-2), N = x.dim(-1), B = M * N == 0 ? 0 : x.numel() / (M * N);
    SKV_CHECK(y.numel() == x.numel() && y.dim(-1) == M, "transpose_last2: x {} y {}", x.describe(), y.describe());
    if (B == 0) return;
    SKV_CHECK(B <= 65535 && kmath::ceil_div(M, 32) <= 65535, "transpose_last2: {} too large for one launch", x.describe());
    const dim3 grid(static_cast<unsigned>(kmath::ceil_div(N, 32)), static_cast<unsigned>(kmath::ceil_div(M, 32)),
                    static_cast<unsigned>(B));
    transpose_kernel<<<grid, dim3(32, 8), 0, stream()>>>(fptr(x), fptr(y), M, N);
    SKV_CUDA_LAUNCHED("transpose_last2");
  }
  void gelu_tanh(Tensor& x) override {
    check_cuda_f32(x, "gelu_tanh");
    if (x.numel() == 0) return;
    OpTimer t("elementwise", 0, 2.0 * x.nbytes());
    gelu_kernel<<<grid1d(x.numel()), kmath::kEltThreads, 0, stream()>>>(fptr(x), x.numel());
    SKV_CUDA_LAUNCHED("gelu_tanh");
  }
  void silu(const Tensor& x, Tensor& y) override {
    check_cuda_f32(x, "silu");
    same_numel(x, y, "silu");
    if (x.numel() == 0) return;
    silu_kernel<<<grid1d(x.numel()), kmath::kEltThreads, 0, stream()>>>(fptr(x), fptr(y), x.numel());
    SKV_CUDA_LAUNCHED("silu");
  }
  void softmax_lastdim(Tensor& x) override {
    check_cuda_f32(x, "softmax_lastdim");
    const int64_t C = x.dim(-1), M = C == 0 ? 0 : x.numel() / C;
    if (M == 0) return;
    softmax_kernel<<<static_cast<unsigned>(M), kRowThreads, 0, stream()>>>(fptr(x), C);
    SKV_CUDA_LAUNCHED("softmax_lastdim");
  }
  void embedding(const Tensor& table, const std::vector<int64_t>& idx, Tensor& y) override {
    check_cuda_tensor(table, "embedding table");
    check_cuda_f32(y, "embedding y");
    SKV_CHECK(table.ndim() == 2 && (table.dtype() == DType::F32 || table.dtype() == DType::F16 || table.dtype() == DType::BF16),
              "embedding: table must be a 2-D F32/F16/BF16 tensor, got {}", table.describe());
    const int64_t V = table.dim(0), C = table.dim(1), n = static_cast<int64_t>(idx.size());
    SKV_CHECK(y.numel() == n * C, "embedding: y {} for {} ids", y.describe(), idx.size());
    for (int64_t i : idx) SKV_CHECK(i >= 0 && i < V, "embedding: index {} outside [0, {})", i, V);
    if (n == 0 || C == 0) return;
    Tensor d_idx = upload_vector(idx, DType::I64);
    embedding_kernel<<<grid1d(n * C), kmath::kEltThreads, 0, stream()>>>(table.raw(), table.dtype(),
                                                                          d_idx.data<int64_t>(), fptr(y), n, C);
    SKV_CUDA_LAUNCHED("embedding");
  }

  void split_qkv(const Tensor& qkv, const Tensor* qb, const Tensor* kb, const Tensor* vb, Tensor& q, Tensor& k,
                 Tensor& v) override {
    const int64_t R = q.dim(0), H = q.dim(1), L = q.dim(2), D = q.dim(3);
    SKV_CHECK(qkv.numel() == 3 * R * H * L * D && k.numel() == q.numel() && v.numel() == q.numel(),
              "split_qkv: qkv {} q {}", qkv.describe(), q.describe());
    check_cuda_f32(qkv, "split_qkv qkv");
    if (q.numel() == 0) return;
    OpTimer t("layout", 0, 2.0 * qkv.nbytes());
    split_qkv_kernel<<<grid1d(q.numel()), kmath::kEltThreads, 0, stream()>>>(
        fptr(qkv), qb ? fptr(*qb) : nullptr, kb ? fptr(*kb) : nullptr, vb ? fptr(*vb) : nullptr, fptr(q), fptr(k),
        fptr(v), R, H, L, D);
    SKV_CUDA_LAUNCHED("split_qkv");
  }
  void to_heads(const Tensor& x, const Tensor* bias, Tensor& y) override {
    SKV_CHECK(x.numel() == y.numel() && y.ndim() == 4, "to_heads: x {} y {}", x.describe(), y.describe());
    check_cuda_f32(x, "to_heads x");
    if (y.numel() == 0) return;
    heads_kernel<<<grid1d(y.numel()), kmath::kEltThreads, 0, stream()>>>(
        fptr(x), bias ? fptr(*bias) : nullptr, fptr(y), y.dim(0), y.dim(1), y.dim(2), y.dim(3), false);
    SKV_CUDA_LAUNCHED("to_heads");
  }
  void from_heads(const Tensor& x, Tensor& y) override {
    SKV_CHECK(x.numel() == y.numel() && x.ndim() == 4, "from_heads: x {} y {}", x.describe(), y.describe());
    check_cuda_f32(x, "from_heads x");
    if (x.numel() == 0) return;
    heads_kernel<<<grid1d(x.numel()), kmath::kEltThreads, 0, stream()>>>(fptr(x), nullptr, fptr(y), x.dim(0), x.dim(1),
                                                                          x.dim(2), x.dim(3), true);
    SKV_CUDA_LAUNCHED("from_heads");
  }
  void l2norm_heads(Tensor& x, const Tensor* head_scale) override {
    check_cuda_f32(x, "l2norm_heads");
    const int64_t H = x.dim(1), L = x.dim(2), D = x.dim(3), rows = x.numel() / std::max<int64_t>(D, 1);
    if (rows == 0 || D == 0) return;
    constexpr int kWarpsPerBlock = 8;
    l2norm_kernel<<<static_cast<unsigned>(kmath::ceil_div(rows, kWarpsPerBlock)), 32 * kWarpsPerBlock, 0, stream()>>>(
        fptr(x), head_scale ? fptr(*head_scale) : nullptr, rows, L, H, D);
    SKV_CUDA_LAUNCHED("l2norm_heads");
  }
  void rope(Tensor& x, const Tensor& cos_sin, const std::vector<int64_t>& pos) override {
    check_cuda_f32(x, "rope x");
    check_cuda_f32(cos_sin, "rope table");
    const int64_t RH = x.dim(0) * x.dim(1), L = x.dim(2), D = x.dim(3);
    const int64_t P = cos_sin.dim(1), half = cos_sin.dim(2);
    SKV_CHECK(half * 2 == D && static_cast<int64_t>(pos.size()) == L, "rope: x {} table {} positions {}", x.describe(),
              cos_sin.describe(), pos.size());
    for (int64_t t : pos) SKV_CHECK(t >= 0 && t < P, "rope: position {} outside the table ({})", t, P);
    if (RH * L * half == 0) return;
    Tensor d_pos = upload_vector(pos, DType::I64);
    rope_kernel<<<grid1d(RH * L * half), kmath::kEltThreads, 0, stream()>>>(fptr(x), fptr(cos_sin),
                                                                             d_pos.data<int64_t>(), RH, L, half, P);
    SKV_CUDA_LAUNCHED("rope");
  }
  // F32 weights (parity runs): the FP32 kernel; half-precision weights: tensor cores where head_dim allows.
  void attention(const Tensor& q, const std::vector<KVSegment>& segs, float scale, Tensor& out) override {
    cuda::attention(q, segs, scale, out, q.ndim() == 4 && attention_uses_tensor_cores(q.dim(3), weight_dtype()));
  }
  void attention_varlen(const std::vector<AttentionJob>& jobs, float scale) override {
    if (jobs.empty()) return;
    const Tensor& q = *jobs[0].q;
    cuda::attention_varlen(jobs, scale, q.ndim() == 4 && attention_uses_tensor_cores(q.dim(3), weight_dtype()));
  }

  void copy_tokens(const Tensor& src, int64_t n, Tensor& dst, int64_t dst_off) override {
    const int64_t RH = src.dim(0) * src.dim(1), Ls = src.dim(2), D = src.dim(3), cap = dst.dim(2);
    SKV_CHECK(dst.dim(0) * dst.dim(1) == RH && dst.dim(3) == D && n <= Ls && dst_off + n <= cap,
              "copy_tokens: {} tokens of {} into {} at {}", n, src.describe(), dst.describe(), dst_off);
    SKV_CHECK(src.dtype() == dst.dtype(), "copy_tokens: dtype {} -> {}", dtype_name(src.dtype()), dtype_name(dst.dtype()));
    check_cuda_tensor(src, "copy_tokens src");
    check_cuda_tensor(dst, "copy_tokens dst");
    if (n == 0 || RH == 0 || D == 0) return;
    const size_t es = dtype_size(src.dtype());
    OpTimer t("kv_move", 0, 2.0 * static_cast<double>(RH * n * D * es));
    // RH rows of n*D elements: source pitch Ls*D, destination pitch cap*D, starting at slot dst_off.
    SKV_CUDA_CHECK(cudaMemcpy2DAsync(static_cast<char*>(dst.raw()) + dst_off * D * es, cap * D * es, src.raw(),
                                     Ls * D * es, n * D * es, RH, cudaMemcpyDeviceToDevice, stream()));
  }
  void gather_tokens(Tensor& store, int64_t hist_len, const Tensor& cur, const Tensor& kept, int64_t n) override {
    const int64_t RH = store.dim(0) * store.dim(1), cap = store.dim(2), D = store.dim(3), Lc = cur.dim(2);
    SKV_CHECK(kept.numel() == RH * n && n <= cap && kept.dtype() == DType::I32, "gather_tokens: kept {} n {} store {}",
              kept.describe(), n, store.describe());
    SKV_CHECK(cur.dtype() == store.dtype() && cur.dim(0) * cur.dim(1) == RH && cur.dim(3) == D,
              "gather_tokens: current {} for store {}", cur.describe(), store.describe());
    check_cuda_tensor(store, "gather_tokens store");
    check_cuda_tensor(kept, "gather_tokens kept");
    if (n == 0 || RH == 0 || D == 0) return;
    launch_gather(store, hist_len, cur, Lc, kept, n, n);
  }

  // The KV policies' device ops (extent compaction, window scores, ASI attention mass, the selection
  // stage); semantics in runtime/backend.h and kv_select.h.
  void gather_extents(const std::vector<KVExtent>& store, int64_t hist_len, const Tensor& cur, const Tensor& kept,
                      int64_t first, int64_t n) override {
    cuda::gather_extents(store, hist_len, cur, kept, first, n);
  }
  void window_scores(const Tensor& q, const std::vector<int64_t>& q_idx, const std::vector<KVSegment>& segs,
                     float scale, ScoreMode mode, Tensor& out) override {
    cuda::query_scores(q, q_idx, segs, scale, mode == ScoreMode::SoftmaxMean, out);
  }
  void attention_mass(const Tensor& q, const std::vector<int64_t>& q_idx, const std::vector<KVSegment>& segs,
                      int64_t n_hist, float scale, int64_t topk, Tensor& out) override {
    cuda::attention_mass(q, q_idx, segs, n_hist, scale, topk, out);
  }
  void select_kept(const Tensor& scores, const KeepSpec& spec, Tensor& kept) override {
    cuda::select_kept(scores, spec, kept);
  }

  void conv2d(const Tensor& x, const Tensor& w, const Tensor* b, int stride, int pad, Tensor& y) override {
    cuda::conv2d(x, w, b, stride, pad, y);
  }
  void group_norm(const Tensor& x, int groups, const Tensor* w, const Tensor* b, float eps, Tensor& y) override {
    cuda::group_norm(x, groups, w, b, eps, y);
  }
  void interpolate(const Tensor& x, Interp mode, Tensor& y) override { cuda::interpolate(x, mode, y); }
};

Tensor convert_to_half(const Tensor& x, DType dt) {
  check_cuda_f32(x, "convert");
  SKV_CHECK(dt == DType::BF16 || dt == DType::F16, "convert: target {} is not a half type", dtype_name(dt));
  Tensor y = Tensor::empty(x.shape(), dt, MemCategory::Workspace, &ctx().alloc, Device::CUDA);
  if (x.numel() > 0) {
    to_dtype_kernel<<<grid1d(x.numel()), kmath::kEltThreads, 0, stream()>>>(fptr(x), y.data<uint16_t>(), x.numel(), dt);
    SKV_CUDA_LAUNCHED("to_dtype");
  }
  return y;
}

void gather_extents(const std::vector<KVExtent>& store, int64_t hist_len, const Tensor& cur, const Tensor& kept,
                    int64_t first, int64_t n) {
  const ExtentLayout x = check_gather_extents(store, hist_len, cur, kept, first, n);
  for (const KVExtent& e : store) check_cuda_tensor(*e.t, "gather_extents store");
  check_cuda_tensor(kept, "gather_extents kept");
  if (cur.defined()) check_cuda_tensor(cur, "gather_extents current");
  const int64_t RH = x.rows * x.heads, D = x.head_dim;
  if (first >= n || RH == 0 || D == 0) return;
  SKV_CHECK(RH <= 0x7fffffff, "gather_extents: {} rows x heads is too many for one launch", RH);
  SKV_CHECK(store.size() <= 0x7fffffff, "gather_extents: {} extents", store.size());
  const int64_t bytes = D * static_cast<int64_t>(dtype_size(store[0].t->dtype()));
  bool words = bytes % 4 == 0 && (x.cur_len == 0 || reinterpret_cast<uintptr_t>(cur.raw()) % 4 == 0);
  std::vector<GatherExtent> table;
  for (size_t e = 0; e < store.size(); ++e) {
    const Tensor& t = *store[e].t;
    words = words && reinterpret_cast<uintptr_t>(t.raw()) % 4 == 0;
    table.push_back({static_cast<unsigned char*>(t.raw()) + store[e].start * bytes, x.first[e], t.dim(2)});
  }
  const int64_t units = words ? bytes / 4 : bytes;
  const size_t smem = static_cast<size_t>(kmath::kGatherTile * bytes);
  SKV_CHECK(smem <= 48 * 1024, "gather_extents: token vectors of {} bytes exceed the kernel's tile", bytes);
  Tensor d_table = upload_structs(table);
  const auto* ext = reinterpret_cast<const GatherExtent*>(d_table.raw());
  const void* cur_p = x.cur_len > 0 ? cur.raw() : store[0].t->raw();  // never read when every kept index < hist_len
  const int64_t kept_stride = x.shared_kept ? 0 : n;
  const int next = static_cast<int>(store.size());
  OpTimer t("kv_move", 0, 2.0 * static_cast<double>(RH * (n - first) * bytes));
  if (words)
    gather_extents_kernel<uint32_t><<<static_cast<unsigned>(RH), 256, smem, stream()>>>(
        ext, next, hist_len, static_cast<const uint32_t*>(cur_p), x.cur_len, kept.data<int32_t>(), kept_stride, first,
        n, units);
  else
    gather_extents_kernel<uint8_t><<<static_cast<unsigned>(RH), 256, smem, stream()>>>(
        ext, next, hist_len, static_cast<const uint8_t*>(cur_p), x.cur_len, kept.data<int32_t>(), kept_stride, first,
        n, units);
  SKV_CUDA_LAUNCHED("gather_extents");
}

// ---- profiling and device facts (cuda_device.h) ---------------------------------------------------------
void profile_begin() {
  Context& c = ctx();
  SKV_CUDA_CHECK(cudaStreamSynchronize(c.stream));
  for (auto& r : c.records) {
    cudaEventDestroy(r.start);
    cudaEventDestroy(r.stop);
  }
  c.records.clear();
  c.profiling = true;
}

std::map<std::string, OpTotal> profile_end() {
  Context& c = ctx();
  SKV_CUDA_CHECK(cudaStreamSynchronize(c.stream));
  c.profiling = false;
  std::map<std::string, OpTotal> out;
  for (auto& r : c.records) {
    float ms = 0;
    SKV_CUDA_CHECK(cudaEventElapsedTime(&ms, r.start, r.stop));
    OpTotal& t = out[r.op];
    t.calls += 1;
    t.seconds += ms / 1e3;
    t.flops += r.flops;
    t.bytes += r.bytes;
    cudaEventDestroy(r.start);
    cudaEventDestroy(r.stop);
  }
  c.records.clear();
  return out;
}

void* stream_handle() { return static_cast<void*>(ctx().stream); }
int device_index() { return ctx().device; }

DeviceInfo device_info() {
  Context& c = ctx();
  DeviceInfo d;
  d.name = c.prop.name;
  d.index = c.device;
  d.cc_major = c.prop.major;
  d.cc_minor = c.prop.minor;
  d.sms = c.prop.multiProcessorCount;
  d.total_bytes = static_cast<int64_t>(c.prop.totalGlobalMem);
  int mem_khz = 0, bus_bits = 0;
  cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, c.device);
  cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, c.device);
  cudaGetLastError();
  d.hbm_peak_gbs = 2.0 * mem_khz * 1e3 * (bus_bits / 8.0) / 1e9;  // double data rate
  int drv = 0, rt = 0;
  cudaDriverGetVersion(&drv);
  cudaRuntimeGetVersion(&rt);
  d.driver = fmt::format("{}.{}", drv / 1000, (drv % 1000) / 10);
  d.runtime = fmt::format("{}.{}", rt / 1000, (rt % 1000) / 10);
  return d;
}

}  // namespace skv::cuda

namespace skv {

Backend* cuda_backend_instance(std::string* why) {
  try {
    static cuda::CudaBackend* b = new cuda::CudaBackend();  // never destroyed: outlives every tensor
    return b;
  } catch (const std::exception& e) {
    if (why) *why = e.what();
    return nullptr;
  }
}

}  // namespace skv
