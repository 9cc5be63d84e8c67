#include "runtime/models/torch_group_norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/check.h"

namespace skv {

// Every multiply-add below that PyTorch's AVX2 build contracts is an explicit std::fma; every other
// product or sum stands alone (nothing here can be contracted further by the compiler: no product
// feeds a plain addition).
void torch_group_norm_channels_last(const float* x, int64_t N, int64_t C, int64_t HxW, int64_t groups,
                                    const float* gamma, const float* beta, float eps, int torch_threads, float* y) {
  SKV_CHECK(N > 0 && C > 0 && HxW > 0 && groups > 0 && C % groups == 0,
            "torch_group_norm: {} channels, {} groups, N {}, HxW {}", C, groups, N, HxW);
  SKV_CHECK(torch_threads >= 1, "torch_group_norm: {} torch threads", torch_threads);
  const int64_t G = groups, D = C / G;
  const float s = 1.0f / static_cast<float>(D * HxW);
  std::vector<float> mean(N * G), rstd(N * G);
  auto finish = [&](int64_t i, float sum, float sumsq) {
    const float m = sum * s;
    const float var = std::max(std::fma(sumsq, s, -(m * m)), 0.0f);
    mean[i] = m;
    rstd[i] = 1.0f / std::sqrt(var + eps);
  };

  if (HxW < 1024) {  // impl-1: per (n, g), 8 float lanes over the group's channels
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t g = 0; g < G; ++g) {
        float a0[8] = {0, 0, 0, 0, 0, 0, 0, 0}, a1[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        const float* xg = x + (n * C + g * D) * HxW;
        for (int64_t m = 0; m < HxW; ++m)
          for (int64_t d = 0; d < D; ++d) {
            const float v = xg[d * HxW + m];
            a0[d % 8] = a0[d % 8] + v;
            a1[d % 8] = std::fma(v, v, a1[d % 8]);
          }
        float sum = a0[0], sumsq = a1[0];
        for (int l = 1; l < 8; ++l) {
          sum = sum + a0[l];
          sumsq = sumsq + a1[l];
        }
        finish(n * G + g, sum, sumsq);
      }
  } else {  // impl-2: T contiguous chunks of the N * HxW positions, one {N, 2C} buffer per thread
    const int64_t T = torch_threads, total = N * HxW;
    const int64_t tasks = std::min<int64_t>(T, total);  // invoke_parallel: min(threads, divup(total, grain 1))
    const int64_t chunk = T > 1 ? (total + tasks - 1) / tasks : total;
    std::vector<float> buf(static_cast<size_t>(T * N * 2 * C), 0.0f);
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) {
        const float* xc = x + (n * C + c) * HxW;
        int64_t m = 0;
        while (m < HxW) {  // one segment per thread chunk that covers positions of this n
          const int64_t t = (n * HxW + m) / chunk;
          const int64_t stop = std::min(HxW, (t + 1) * chunk - n * HxW);
          float sum = 0.0f, sumsq = 0.0f;
          for (; m < stop; ++m) {
            sum = xc[m] + sum;
            sumsq = std::fma(xc[m], xc[m], sumsq);
          }
          float* bp = buf.data() + (t * N + n) * 2 * C;
          bp[c] = sum;
          bp[C + c] = sumsq;
        }
      }
    for (int64_t n = 0; n < N; ++n)
      for (int64_t g = 0; g < G; ++g) {
        float sum = 0.0f, sumsq = 0.0f;
        for (int64_t d = 0; d < D; ++d)
          for (int64_t t = 0; t < T; ++t) {
            const float* bp = buf.data() + (t * N + n) * 2 * C;
            sum += bp[g * D + d];
            sumsq += bp[C + g * D + d];
          }
        finish(n * G + g, sum, sumsq);
      }
  }

#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const int64_t i = n * G + c / D;
      const float scale = rstd[i] * (gamma ? gamma[c] : 1.0f);
      const float bias = std::fma(-scale, mean[i], beta ? beta[c] : 0.0f);
      const float* xc = x + (n * C + c) * HxW;
      float* yc = y + (n * C + c) * HxW;
      for (int64_t m = 0; m < HxW; ++m) yc[m] = std::fma(xc[m], scale, bias);
    }
}

Tensor torch_group_norm(Backend& be, const Tensor& x, int groups, const Tensor* w, const Tensor* b, float eps,
                        int torch_threads) {
  SKV_CHECK(x.ndim() == 4, "torch_group_norm: x is {}, expected [N, C, H, W]", x.describe());
  const bool host = be.device() == Device::CPU;
  const Tensor xh = host ? x : be.download(x);
  const Tensor wh = w == nullptr ? Tensor() : host ? *w : be.download(*w);
  const Tensor bh = b == nullptr ? Tensor() : host ? *b : be.download(*b);
  Tensor y = Tensor::empty(x.shape(), DType::F32, MemCategory::Activations);
  torch_group_norm_channels_last(xh.f32(), x.dim(0), x.dim(1), x.dim(2) * x.dim(3), groups,
                                 w ? wh.f32() : nullptr, b ? bh.f32() : nullptr, eps, torch_threads, y.f32());
  return host ? y : be.upload(y, MemCategory::Activations);
}

}  // namespace skv
