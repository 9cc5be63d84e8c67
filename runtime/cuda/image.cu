// image.cu - the decoders' ops: conv2d (im2col + cuBLAS SGEMM), GroupNorm, and PyTorch-exact
// interpolation (nearest, bilinear, bicubic, area, trilinear). Interpolation taps come from
// runtime/hostdevice.h, the very functions the CPU backend tabulates, so both sides agree on every
// source index and weight; each output element sums its taps in the CPU backend's order.
// conv2d builds the column matrix for a band of output rows at a time, so its workspace stays below
// kConvWorkspaceFloats even for a 1024x1024 decoder layer (one image's full im2col would be GBs).
#include <algorithm>

#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_device.h"
#include "runtime/cuda/ops.h"

namespace skv::cuda {

namespace {

constexpr int64_t kConvWorkspaceFloats = int64_t{64} << 20;  // 256 MiB

#define SKV_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// col[k, pp] for k < Kc, pp < pb: input pixel of kernel tap k for output position p0 + pp (0 = padding).
__global__ void im2col_kernel(const float* x, float* col, int64_t Kc, int64_t pb, int64_t p0, int64_t H, int64_t W,
                              int64_t kh, int64_t kw, int64_t Wo, int stride, int pad) {
  SKV_GRID_STRIDE(e, Kc * pb) {
    const int64_t k = e / pb, pp = e % pb;
    const int64_t src = kmath::im2col_source(k, p0 + pp, H, W, kh, kw, Wo, stride, pad);
    col[e] = src >= 0 ? x[src] : 0.0f;
  }
}

__global__ void channel_bias_kernel(float* y, const float* b, int64_t n, int64_t P, int64_t Co) {
  SKV_GRID_STRIDE(i, n) y[i] += b[(i / P) % Co];
}

__global__ void half_to_f32_kernel(const uint16_t* x, float* y, int64_t n, DType dt) {
  SKV_GRID_STRIDE(i, n) y[i] = load_as_f32(x, i, dt);
}

// One block per (image, group): statistics in double over the group's cg * HW contiguous values.
__global__ void group_norm_kernel(const float* x, const float* w, const float* b, float eps, float* y, int64_t C,
                                  int64_t cg, int64_t HW, int groups) {
  __shared__ double red[32];
  const int64_t n = blockIdx.x / groups, g = blockIdx.x % groups, cnt = cg * HW;
  const float* src = x + (n * C + g * cg) * HW;
  float* dst = y + (n * C + g * cg) * HW;
  double s = 0;
  for (int64_t i = threadIdx.x; i < cnt; i += blockDim.x) s += src[i];
  const double mean = block_sum_d(s, red) / static_cast<double>(cnt);
  double v = 0;
  for (int64_t i = threadIdx.x; i < cnt; i += blockDim.x) v += (src[i] - mean) * (src[i] - mean);
  const double var = block_sum_d(v, red) / static_cast<double>(cnt);
  const float rstd = static_cast<float>(1.0 / sqrt(var + eps)), mu = static_cast<float>(mean);
  for (int64_t i = threadIdx.x; i < cnt; i += blockDim.x) {
    const int64_t ch = g * cg + i / HW;
    const float a = rstd * (w ? w[ch] : 1.0f);
    const float bb = (b ? b[ch] : 0.0f) - mu * a;
    dst[i] = src[i] * a + bb;
  }
}

// 4-D interpolation, one thread per output element of [NC, Ho, Wo].
__global__ void interp2d_kernel(const float* x, float* y, int64_t NC, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                                Interp mode) {
  SKV_GRID_STRIDE(o, NC * Ho * Wo) {
    const int64_t ox = o % Wo, oy = (o / Wo) % Ho, c = o / (Wo * Ho);
    const float* p = x + c * H * W;
    float out = 0.0f;
    switch (mode) {
      case Interp::Nearest: out = p[nearest_src(H, Ho, oy) * W + nearest_src(W, Wo, ox)]; break;
      case Interp::Bilinear: out = kmath::bilinear_at(p, W, linear_tap(H, Ho, oy), linear_tap(W, Wo, ox)); break;
      case Interp::Bicubic: out = kmath::bicubic_at(p, H, W, Ho, Wo, oy, ox); break;
      case Interp::Area: out = area_at(p, H, W, Ho, Wo, oy, ox); break;
      default: break;
    }
    y[o] = out;
  }
}

// 5-D trilinear, one thread per output element of [NC, To, Ho, Wo].
__global__ void trilinear_kernel(const float* x, float* y, int64_t NC, int64_t T, int64_t H, int64_t W, int64_t To,
                                 int64_t Ho, int64_t Wo) {
  SKV_GRID_STRIDE(o, NC * To * Ho * Wo) {
    const int64_t ox = o % Wo, oy = (o / Wo) % Ho, ot = (o / (Wo * Ho)) % To, c = o / (Wo * Ho * To);
    y[o] = kmath::trilinear_at(x + c * T * H * W, T, H, W, To, Ho, Wo, ot, oy, ox);
  }
}

}  // namespace

void conv2d(const Tensor& x, const Tensor& w, const Tensor* b, int stride, int pad, Tensor& y) {
  check_cuda_f32(x, "conv2d x");
  check_cuda_f32(y, "conv2d y");
  check_cuda_tensor(w, "conv2d weight");
  SKV_CHECK(x.ndim() == 4 && w.ndim() == 4 && y.ndim() == 4 && stride >= 1 && pad >= 0,
            "conv2d: x {} w {} y {} stride {} pad {}", x.describe(), w.describe(), y.describe(), stride, pad);
  const int64_t N = x.dim(0), Ci = x.dim(1), H = x.dim(2), W = x.dim(3);
  const int64_t Co = w.dim(0), kh = w.dim(2), kw = w.dim(3);
  SKV_CHECK(w.dim(1) == Ci, "conv2d: weight {} for input {}", w.describe(), x.describe());
  const int64_t Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
  SKV_CHECK(y.dim(0) == N && y.dim(1) == Co && y.dim(2) == Ho && y.dim(3) == Wo,
            "conv2d: output {} expected [{}, {}, {}, {}]", y.describe(), N, Co, Ho, Wo);
  const int64_t Kc = Ci * kh * kw, P = Ho * Wo;
  if (N * Co * P == 0) return;
  OpTimer timer("conv2d", 2.0 * N * Co * P * Kc, static_cast<double>(x.nbytes() + w.nbytes() + y.nbytes()));
  Tensor w32 = w;
  if (w.dtype() != DType::F32) {
    SKV_CHECK(w.dtype() == DType::F16 || w.dtype() == DType::BF16, "conv2d: weight dtype {} unsupported", dtype_name(w.dtype()));
    w32 = Tensor::empty(w.shape(), DType::F32, MemCategory::Workspace, &ctx().alloc, Device::CUDA);
    half_to_f32_kernel<<<grid1d(w.numel()), kmath::kEltThreads, 0, stream()>>>(w.data<uint16_t>(), fptr(w32), w.numel(),
                                                                                w.dtype());
    SKV_CUDA_LAUNCHED("conv2d weight to f32");
  }
  const bool direct = kh == 1 && kw == 1 && stride == 1 && pad == 0;
  const int64_t band_rows = std::max<int64_t>(1, std::min<int64_t>(Ho, kConvWorkspaceFloats / std::max<int64_t>(1, Kc * Wo)));
  Tensor col;
  if (!direct) col = Tensor::empty({Kc * band_rows * Wo}, DType::F32, MemCategory::Workspace, &ctx().alloc, Device::CUDA);
  for (int64_t n = 0; n < N; ++n) {
    const float* xn = fptr(x) + n * Ci * H * W;
    float* yn = fptr(y) + n * Co * P;
    if (direct) {
      sgemm_nn(Co, P, Kc, fptr(w32), Kc, xn, P, yn, P);  // y[Co, P] = w[Co, Ci] . x[Ci, P]
      continue;
    }
    for (int64_t oy0 = 0; oy0 < Ho; oy0 += band_rows) {
      const int64_t pb = std::min(band_rows, Ho - oy0) * Wo, p0 = oy0 * Wo;
      im2col_kernel<<<grid1d(Kc * pb), kmath::kEltThreads, 0, stream()>>>(xn, fptr(col), Kc, pb, p0, H, W, kh, kw, Wo,
                                                                           stride, pad);
      SKV_CUDA_LAUNCHED("im2col");
      sgemm_nn(Co, pb, Kc, fptr(w32), Kc, fptr(col), pb, yn + p0, P);  // columns [p0, p0 + pb) of y[Co, P]
    }
  }
  if (b) {
    check_cuda_f32(*b, "conv2d bias");
    SKV_CHECK(b->numel() == Co, "conv2d: bias {} for {} channels", b->describe(), Co);
    channel_bias_kernel<<<grid1d(N * Co * P), kmath::kEltThreads, 0, stream()>>>(fptr(y), fptr(*b), N * Co * P, P, Co);
    SKV_CUDA_LAUNCHED("conv2d bias");
  }
}

void group_norm(const Tensor& x, int groups, const Tensor* w, const Tensor* b, float eps, Tensor& y) {
  check_cuda_f32(x, "group_norm x");
  check_cuda_f32(y, "group_norm y");
  const int64_t N = x.dim(0), C = x.dim(1), HW = N * C == 0 ? 0 : x.numel() / (N * C);
  SKV_CHECK(groups >= 1 && C % groups == 0, "group_norm: {} channels not divisible by {} groups", C, groups);
  SKV_CHECK(y.numel() == x.numel(), "group_norm: x {} y {}", x.describe(), y.describe());
  if (N * C * HW == 0) return;
  OpTimer timer("norm", 0, 2.0 * x.nbytes());
  group_norm_kernel<<<static_cast<unsigned>(N * groups), 256, 0, stream()>>>(
      fptr(x), w ? fptr(*w) : nullptr, b ? fptr(*b) : nullptr, eps, fptr(y), C, C / groups, HW, groups);
  SKV_CUDA_LAUNCHED("group_norm");
}

void interpolate(const Tensor& x, Interp mode, Tensor& y) {
  check_cuda_f32(x, "interpolate x");
  check_cuda_f32(y, "interpolate y");
  OpTimer timer("interpolate", 0, static_cast<double>(x.nbytes() + y.nbytes()));
  if (mode == Interp::Trilinear) {
    SKV_CHECK(x.ndim() == 5 && y.ndim() == 5 && x.dim(0) == y.dim(0) && x.dim(1) == y.dim(1), "trilinear: {} -> {}",
              x.describe(), y.describe());
    const int64_t NC = x.dim(0) * x.dim(1), n = y.numel();
    if (n == 0) return;
    trilinear_kernel<<<grid1d(n), kmath::kEltThreads, 0, stream()>>>(fptr(x), fptr(y), NC, x.dim(2), x.dim(3), x.dim(4),
                                                                      y.dim(2), y.dim(3), y.dim(4));
    SKV_CUDA_LAUNCHED("trilinear");
    return;
  }
  SKV_CHECK(x.ndim() == 4 && y.ndim() == 4 && x.dim(0) == y.dim(0) && x.dim(1) == y.dim(1), "interpolate: {} -> {}",
            x.describe(), y.describe());
  const int64_t n = y.numel();
  if (n == 0) return;
  interp2d_kernel<<<grid1d(n), kmath::kEltThreads, 0, stream()>>>(fptr(x), fptr(y), x.dim(0) * x.dim(1), x.dim(2),
                                                                   x.dim(3), y.dim(2), y.dim(3), mode);
  SKV_CUDA_LAUNCHED("interpolate");
}

}  // namespace skv::cuda
