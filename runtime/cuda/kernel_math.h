// kernel_math.h - the index and reduction logic of the CUDA kernels, as __host__ __device__ functions.
// The kernels call exactly these functions; tests/runtime/test_cuda_kernel_math.cpp runs them on the
// CPU (sequentially, in the order a kernel's threads would) against the CPU backend's results. That is
// how the CUDA path gets checked on machines without a GPU: what cannot run here is only the parallel
// scaffolding around these functions (thread indexing, shared memory, shuffles), kept deliberately thin.
// C++17 and no CUDA headers, so plain host compilers include it too.
#pragma once

#include <cstdint>
#include <cstring>

#include "runtime/hostdevice.h"

namespace skv::kmath {

SKV_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- attention (online softmax, flash-style) ------------------------------------------------------
// A block owns kAttnQueriesPerBlock queries of one (row, head); its warps own kAttnQueriesPerWarp each.
// Keys/values stream through shared memory in tiles of kAttnKeyTile (one key per lane for the scores,
// one head-dim slice per lane for the output). The K tile's row stride is head_dim + 1 so lane j
// reading row j hits a different bank than lane j + 1.
constexpr int kAttnKeyTile = 32;
constexpr int kAttnWarps = 4;
constexpr int kAttnQueriesPerWarp = 4;
constexpr int kAttnQueriesPerBlock = kAttnWarps * kAttnQueriesPerWarp;
constexpr int kAttnMaxHeadDim = 256;
// Segments (the KV cache's extents, the current scale, the text) have no count limit: the kernels read
// a device table of them, so a layer whose store the slot pool carved into any number of extents runs.

// Shared memory of a launch: a kernel's static __shared__ arrays count against the same per-block
// limit as the dynamic bytes, and past the 48 KiB default the kernel must opt in
// (cudaFuncAttributeMaxDynamicSharedMemorySize). Returns 0: fits by default, 1: needs the opt-in,
// -1: does not fit this device (optin_limit = cudaDeviceProp::sharedMemPerBlockOptin).
constexpr int64_t kSmemDefaultLimit = 48 * 1024;
SKV_HD int smem_launch_class(int64_t dynamic_bytes, int64_t static_bytes, int64_t optin_limit) {
  const int64_t total = dynamic_bytes + static_bytes;
  if (total > optin_limit) return -1;
  return total > kSmemDefaultLimit ? 1 : 0;
}

// What one attention launch can take: grid.y = rows x heads, head_dim up to kAttnMaxHeadDim. Returns
// nullptr when it fits, else what does not. The CUDA attention refuses such a call, and the CPU backend
// asks the same question in debug builds, so a CPU test fails where the GPU would.
constexpr int64_t kAttnMaxRowHeads = 65535;
inline const char* attention_launch_limit(int64_t rows, int64_t heads, int64_t head_dim) {
  if (rows * heads > kAttnMaxRowHeads) return "rows x heads exceed one launch (65535)";
  if (head_dim < 1 || head_dim > kAttnMaxHeadDim) return "head_dim outside [1, 256]";
  return nullptr;
}

SKV_HD int64_t attn_smem_floats(int64_t head_dim) {
  return kAttnKeyTile * (head_dim + 1) + kAttnKeyTile * head_dim + kAttnQueriesPerBlock * head_dim;
}

// Running state of one query's softmax over the keys seen so far: max m, normaliser l = sum exp(s - m),
// and (held by the caller) acc = sum exp(s - m) v. Feeding a tile: m' = max(m, tile max); the old
// l and acc are multiplied by exp(m - m') (0 when nothing was seen: m = -inf), then the tile's
// exp(s - m') are added. out = acc / l (0 for a query that saw no key, as the CPU backend).
struct OnlineSoftmax {
  float m;
  float l;
};
SKV_HD OnlineSoftmax online_softmax_init() {
  OnlineSoftmax s;
  s.m = -INFINITY;
  s.l = 0.0f;
  return s;
}
// Enters a tile whose largest score is tile_max; returns the factor the accumulators are multiplied by.
SKV_HD float online_softmax_enter(OnlineSoftmax& s, float tile_max) {
  const float m_new = s.m > tile_max ? s.m : tile_max;
  const float corr = (s.m == -INFINITY) ? 0.0f : expf(s.m - m_new);
  s.m = m_new;
  s.l *= corr;
  return corr;
}
// Weight of one score in the current tile (after online_softmax_enter); -inf scores weigh 0.
SKV_HD float online_softmax_weight(const OnlineSoftmax& s, float score) {
  return (score == -INFINITY || s.m == -INFINITY) ? 0.0f : expf(score - s.m);
}
SKV_HD float online_softmax_finish(const OnlineSoftmax& s, float acc) { return s.l > 0.0f ? acc / s.l : 0.0f; }

// Tensor-core (WMMA bf16) attention: a block owns kTcQueries queries (16 per warp), keys come in tiles
// of kTcKeys. Shared memory, byte offsets from the (32-byte aligned) base: Q, K, V as bf16 [64][ldh];
// per warp: scores FP32 [16][lds], probabilities bf16 [16][ldp], output accumulator FP32 [16][ldo].
// Row strides are padded against bank conflicts; WMMA needs every 16x16 tile start 32-byte aligned,
// which holds for head_dim a multiple of 16 (tests check every offset for head_dim 16..128).
constexpr int kTcQueries = 64, kTcKeys = 64, kTcWarps = 4;
struct TcAttnLayout {
  int64_t ldh, lds, ldp, ldo;           // elements
  int64_t q, k, v, s, p, o, bytes;      // byte offsets of the regions, total bytes
  int64_t s_warp, p_warp, o_warp;       // bytes between consecutive warps' regions
};
SKV_HD TcAttnLayout tc_attn_layout(int64_t D) {
  TcAttnLayout t;
  t.ldh = D + 8;
  t.lds = kTcKeys + 4;
  t.ldp = kTcKeys + 8;
  t.ldo = D + 4;
  t.q = 0;
  t.k = t.q + kTcQueries * t.ldh * 2;
  t.v = t.k + kTcKeys * t.ldh * 2;
  t.s = t.v + kTcKeys * t.ldh * 2;
  t.s_warp = 16 * t.lds * 4;
  t.p = t.s + kTcWarps * t.s_warp;
  t.p_warp = 16 * t.ldp * 2;
  t.o = t.p + kTcWarps * t.p_warp;
  t.o_warp = 16 * t.ldo * 4;
  t.bytes = t.o + kTcWarps * t.o_warp;
  return t;
}

// ---- top-k by radix select --------------------------------------------------------------------------
// Floats mapped to unsigned keys with the same order (larger float -> larger key). -0 and +0 map to
// the same key, so they tie as they compare equal (the reference's stable sort sees them equal too).
SKV_HD uint32_t float_order_key(float f) {
  if (f == 0.0f) f = 0.0f;
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

SKV_HD float float_from_order_key(uint32_t key) {  // inverse of float_order_key (+0 for the zero key)
  const uint32_t u = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

// MSB-first radix select of the k-th largest key, 8 bits per pass (shift 24, 16, 8, 0). Before a pass
// the kernel histograms the digit (key >> shift) & 255 of every candidate key whose bits above `shift`
// equal `prefix` under `mask`; step() then picks the digit holding the k-th largest. After the four
// passes, `prefix` is the k-th largest key T: every key > T is selected, and `remaining` keys equal to
// T are selected too (the lowest indices: ties go to the lower index, like torch.topk on CUDA).
struct RadixSelect {
  uint32_t prefix;
  uint32_t mask;
  int64_t remaining;  // how many of the keys matching prefix/mask are still to be selected
};
SKV_HD RadixSelect radix_select_init(int64_t k) {
  RadixSelect r;
  r.prefix = 0;
  r.mask = 0;
  r.remaining = k;
  return r;
}
SKV_HD bool radix_select_matches(const RadixSelect& r, uint32_t key) { return (key & r.mask) == r.prefix; }
SKV_HD int radix_digit(uint32_t key, int shift) { return static_cast<int>((key >> shift) & 0xffu); }
SKV_HD void radix_select_step(RadixSelect& r, const int32_t hist[256], int shift) {
  int64_t above = 0;
  int d = 255;
  for (; d > 0; --d) {
    if (above + hist[d] >= r.remaining) break;
    above += hist[d];
  }
  r.remaining -= above;
  r.prefix |= static_cast<uint32_t>(d) << shift;
  r.mask |= 0xffu << shift;
}

// ---- the KV selection stage (kvcache/selection.h; kv_select.cu) -------------------------------------
// Whether v is in the ascending array a[0, n).
SKV_HD bool in_sorted(const int32_t* a, int n, int64_t v) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (a[mid] < v)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < n && a[lo] == v;
}
// Pooled score of column i of a row s[0, n): F.max_pool1d (-inf padding) or F.avg_pool1d (zero padding,
// divided by the kernel) over [i - kernel/2, i + kernel/2], the window columns win[0, nw) (ascending)
// reading as -inf when `mask`. The host selection and the pooling kernel both call this.
SKV_HD float pool_at(const float* s, int64_t n, int64_t i, int kernel, bool is_max, const int32_t* win, int nw, bool mask) {
  const int64_t half = kernel / 2;
  const int64_t lo = i - half < 0 ? 0 : i - half, hi = i + half > n - 1 ? n - 1 : i + half;
  float v = is_max ? -INFINITY : 0.0f;
  for (int64_t j = lo; j <= hi; ++j) {
    const float x = mask && in_sorted(win, nw, j) ? -INFINITY : s[j];
    v = is_max ? (x > v ? x : v) : v + x;
  }
  return is_max ? v : v / static_cast<float>(kernel);
}

// ---- im2col -----------------------------------------------------------------------------------------
// Column matrix row k = (ci, dy, dx) of a kh x kw kernel, column p = (oy, ox) of the output map:
// the input pixel it reads, or -1 for zero padding.
SKV_HD int64_t im2col_source(int64_t k, int64_t p, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t Wo, int stride,
                             int pad) {
  const int64_t ci = k / (kh * kw), dy = (k / kw) % kh, dx = k % kw;
  const int64_t oy = p / Wo, ox = p % Wo;
  const int64_t iy = oy * stride - pad + dy, ix = ox * stride - pad + dx;
  return (iy >= 0 && iy < H && ix >= 0 && ix < W) ? (ci * H + iy) * W + ix : -1;
}

// ---- interpolation, one output element (the CUDA kernels' per-thread body) --------------------------
// p points at one [H, W] plane (or [T, H, W] volume); taps from hostdevice.h; sums in the CPU
// backend's order.
SKV_HD float bilinear_at(const float* p, int64_t W, const LinearTap& a, const LinearTap& b) {
  const float r0 = p[a.i0 * W + b.i0] * b.w0 + p[a.i0 * W + b.i1] * b.w1;
  const float r1 = p[a.i1 * W + b.i0] * b.w0 + p[a.i1 * W + b.i1] * b.w1;
  return r0 * a.w0 + r1 * a.w1;
}
SKV_HD float bicubic_at(const float* p, int64_t H, int64_t W, int64_t Ho, int64_t Wo, int64_t oy, int64_t ox) {
  const CubicTap ty = cubic_tap(H, Ho, oy), tx = cubic_tap(W, Wo, ox);
  float out = 0.0f;
  for (int i = 0; i < 4; ++i) {
    const float* row = p + ty.idx[i] * W;
    float t = row[tx.idx[0]] * tx.w[0];
    for (int j = 1; j < 4; ++j) t += row[tx.idx[j]] * tx.w[j];
    out = i == 0 ? t * ty.w[0] : out + t * ty.w[i];
  }
  return out;
}
SKV_HD float trilinear_at(const float* p, int64_t T, int64_t H, int64_t W, int64_t To, int64_t Ho, int64_t Wo, int64_t ot,
                          int64_t oy, int64_t ox) {
  return skv::trilinear_at(p, H, W, linear_tap(T, To, ot), linear_tap(H, Ho, oy), linear_tap(W, Wo, ox));
}

// ---- in-place KV compaction -------------------------------------------------------------------------
// gather_tokens moves token kept[j] of [store | current] to store slot j. kept is ascending, so
// kept[j] >= j: a slot is only ever read at or after the position being written. One block per
// (row, head) walks j in tiles of kGatherTile tokens: every thread first reads its tile's sources,
// the block synchronises, then writes. Within a tile a source may be another thread's destination
// (kept[j] = j' with j < j'), which the read-then-write split makes safe; a later tile only reads
// slots >= its first j, which no earlier tile wrote.
constexpr int kGatherTile = 32;

// ---- misc -------------------------------------------------------------------------------------------
// Threads per block for 1-D element-wise kernels, and the grid for n elements (grid-stride loops cap it).
constexpr int kEltThreads = 256;
SKV_HD int64_t elt_blocks(int64_t n) {
  const int64_t b = ceil_div(n, kEltThreads);
  return b < 1 ? 1 : (b > 65535 * 8 ? 65535 * 8 : b);
}

}  // namespace skv::kmath
