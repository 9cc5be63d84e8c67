// hostdevice.h - element-wise math shared by the CPU and CUDA backends.
// Everything here is a __host__ __device__ inline function, so the CPU unit tests pin down the exact
// arithmetic the CUDA kernels use (half/bfloat16 conversion, GELU-tanh, SiLU, cubic weights).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define SKV_HD __host__ __device__ __forceinline__
#else
#define SKV_HD inline
#endif

namespace skv {

SKV_HD float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

// Round-to-nearest-even, NaN preserved (the rule PyTorch uses for .to(torch.bfloat16)).
SKV_HD uint16_t f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

SKV_HD float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((man & 0x400u) == 0) {
        man <<= 1;
        --exp;
      }
      man &= 0x3ffu;
      u = sign | (exp << 23) | (man << 13);
    }
  } else if (exp == 0x1f) {
    u = sign | 0x7f800000u | (man << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

// Round-to-nearest-even with overflow to inf and gradual underflow. The float unit does the
// rounding: scaling by 2^112 then 2^-110 leaves the value with exactly the bits half precision keeps.
SKV_HD uint16_t f32_to_f16(float f) {
  uint32_t w;
  memcpy(&w, &f, sizeof w);
  const uint32_t two_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  float base = (fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
  uint32_t bias = two_w & 0xff000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  const uint32_t bias_bits = (bias >> 1) + 0x07800000u;
  float bias_f;
  memcpy(&bias_f, &bias_bits, sizeof bias_f);
  base = bias_f + base;
  uint32_t bits;
  memcpy(&bits, &base, sizeof bits);
  const uint32_t nonsign = ((bits >> 13) & 0x7c00u) + (bits & 0x0fffu);
  return static_cast<uint16_t>((sign >> 16) | (two_w > 0xff000000u ? 0x7e00u : nonsign));
}

// GELU with the tanh approximation, as torch.nn.GELU(approximate='tanh').
SKV_HD float gelu_tanh(float x) {
  const float k0 = 0.7978845608028654f;  // sqrt(2/pi)
  const float k1 = 0.044715f;
  return 0.5f * x * (1.0f + tanhf(k0 * (x + k1 * x * x * x)));
}

SKV_HD float silu(float x) { return x / (1.0f + expf(-x)); }

// PyTorch's cubic convolution weights (upsample_bicubic2d, A = -0.75) for fractional offset t.
SKV_HD void cubic_weights(float t, float w[4]) {
  const float A = -0.75f;
  const float x1 = t + 1.0f, x2 = t, x3 = 1.0f - t, x4 = 2.0f - t;
  w[0] = ((A * x1 - 5.0f * A) * x1 + 8.0f * A) * x1 - 4.0f * A;
  w[1] = ((A + 2.0f) * x2 - (A + 3.0f)) * x2 * x2 + 1.0f;
  w[2] = ((A + 2.0f) * x3 - (A + 3.0f)) * x3 * x3 + 1.0f;
  w[3] = ((A * x4 - 5.0f * A) * x4 + 8.0f * A) * x4 - 4.0f * A;
}

// Interpolation taps along one axis (input size `in`, output size `out`, output index `o`), exactly as
// PyTorch computes them for align_corners=False. The CPU backend tabulates them per axis, the CUDA
// kernels compute them per output element: the same function, so the same float arithmetic.
struct LinearTap {
  int64_t i0, i1;
  float w0, w1;
};
// Linear modes (bilinear, trilinear) differ from bicubic in one place: PyTorch's CPU kernel takes the
// float scale in/out but computes the source index and the weight in double (its accumulate type),
// rounding only the weight to float. In float the weights of a downsampling (64 -> 40, 64 -> 48,
// 48 -> 21) come out an ulp off in about 1 of 10 taps (tests/runtime/test_interp_torch.cpp).
SKV_HD LinearTap linear_tap(int64_t in, int64_t out, int64_t o) {  // compute_indices_weights_linear
  LinearTap t;
  if (in == out) {  // PyTorch copies: index o, weights 1 and 0
    t.i0 = t.i1 = o;
    t.w0 = 1.0f, t.w1 = 0.0f;
    return t;
  }
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  double real = static_cast<double>(scale) * (static_cast<double>(o) + 0.5) - 0.5;
  if (real < 0.0) real = 0.0;
  const int64_t i0 = static_cast<int64_t>(real);
  const float l1 = static_cast<float>(real - static_cast<double>(i0));
  t.i0 = i0;
  t.i1 = i0 + (i0 < in - 1 ? 1 : 0);
  t.w0 = 1.0f - l1;
  t.w1 = l1;
  return t;
}

// mode='trilinear' as Infinity's generation loop runs it. The codes are a permuted view
// (rearrange 'b ... d -> b d ...'), i.e. channels-last-3d, and summed_codes inherits that layout, so
// PyTorch takes cpu_upsample_linear_channels_last, not the separable kernel: per output one 8-term sum with
// combined weights (lambda_t * lambda_h) * lambda_w, evaluated x000 * w000 + (x001 * w001 + (... + x111 * w111)).
// The x86 builds that made the goldens (AVX2 dispatch) contract it into a chain of FMAs; the portable kernel
// (ATEN_CPU_CAPABILITY=default) computes p * w + r instead. With fmaf this reproduces infinity-tiny's codes_in and
// summed_codes bit for bit, and PyTorch at the table's ratios (C % 8 == 0; tests/runtime/test_interp_torch.cpp
// runs PyTorch's native channels-last kernel). p points at one [T, H, W] volume.
SKV_HD float trilinear_at(const float* p, int64_t H, int64_t W, const LinearTap& tt, const LinearTap& ty,
                          const LinearTap& tx) {
  const int64_t it[2] = {tt.i0, tt.i1}, ih[2] = {ty.i0, ty.i1}, iw[2] = {tx.i0, tx.i1};
  const float wt[2] = {tt.w0, tt.w1}, wh[2] = {ty.w0, ty.w1}, ww[2] = {tx.w0, tx.w1};
  float r = p[(it[1] * H + ih[1]) * W + iw[1]] * (wt[1] * wh[1] * ww[1]);
  for (int k = 6; k >= 0; --k) {
    const int a = k >> 2, b = (k >> 1) & 1, c = k & 1;
    r = fmaf(p[(it[a] * H + ih[b]) * W + iw[c]], wt[a] * wh[b] * ww[c], r);
  }
  return r;
}

struct CubicTap {
  int64_t idx[4];
  float w[4];
};
SKV_HD CubicTap cubic_tap(int64_t in, int64_t out, int64_t o) {  // upsample_bicubic2d, clamped borders
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  // area_pixel_compute_source_index(cubic = true), align_corners=False: in float, never clamped (the
  // linear modes compute theirs in double: linear_tap).
  const float real = scale * (static_cast<float>(o) + 0.5f) - 0.5f;
  const int64_t i = static_cast<int64_t>(floorf(real));
  CubicTap t;
  cubic_weights(real - static_cast<float>(i), t.w);
  for (int j = 0; j < 4; ++j) {
    const int64_t v = i - 1 + j;
    t.idx[j] = v < 0 ? 0 : (v > in - 1 ? in - 1 : v);
  }
  return t;
}

// mode='nearest' (legacy): floor(o * in / out), clamped.
SKV_HD int64_t nearest_src(int64_t in, int64_t out, int64_t o) {
  const float s = static_cast<float>(in) / static_cast<float>(out);
  const int64_t i = static_cast<int64_t>(floorf(static_cast<float>(o) * s));
  return i < in - 1 ? i : in - 1;
}

// mode='area' (adaptive average pooling): output o averages input [begin, end).
SKV_HD int64_t area_begin(int64_t in, int64_t out, int64_t o) { return (o * in) / out; }
SKV_HD int64_t area_end(int64_t in, int64_t out, int64_t o) { return ((o + 1) * in + out - 1) / out; }
// One output of mode='area' on a [H, W] plane: PyTorch's cpu_adaptive_avg_pool sums the window row by
// row in float and divides by kh, then by kw (sum / (kh * kw) rounds differently in ~5 % of outputs
// at 16 -> 13 or 32 -> 18; tests/runtime/test_interp_torch.cpp pins it against PyTorch).
SKV_HD float area_at(const float* p, int64_t H, int64_t W, int64_t Ho, int64_t Wo, int64_t oy, int64_t ox) {
  const int64_t y0 = area_begin(H, Ho, oy), y1 = area_end(H, Ho, oy);
  const int64_t x0 = area_begin(W, Wo, ox), x1 = area_end(W, Wo, ox);
  float sum = 0.0f;
  for (int64_t iy = y0; iy < y1; ++iy)
    for (int64_t ix = x0; ix < x1; ++ix) sum += p[iy * W + ix];
  return sum / static_cast<float>(y1 - y0) / static_cast<float>(x1 - x0);
}

}  // namespace skv
