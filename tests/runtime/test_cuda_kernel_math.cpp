// The CUDA kernels' logic, run on the CPU (runtime/cuda/kernel_math.h). Each test replays a kernel's
// algorithm sequentially - same tiles, same masks, same update functions - and compares it with the
// CPU backend (the reference). What these cannot cover is the parallel scaffolding (thread indices,
// shared memory, shuffles); tests/cuda/test_backend_ops.cpp covers that wherever a GPU is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <tuple>

#include "runtime/backend.h"
#include "runtime/check.h"
#include "runtime/cuda/kernel_math.h"
#include "runtime/hostdevice.h"
#include "kvcache/selection.h"
#include "runtime/safetensors.h"
#include "test_util.h"

#ifndef SKV_GOLDEN_DIR_DEFAULT
#define SKV_GOLDEN_DIR_DEFAULT "../shared/golden"
#endif

namespace skv {

using test::max_abs_diff;
using test::randn;

namespace {

Backend& cpu() { return cpu_backend(); }

// attention.cu, sequentially: per (row, head) and query, key tiles of kAttnKeyTile over the segments,
// each folded in with online_softmax_enter / _weight, acc += p v, out = finish(acc).
void attention_emulated(const Tensor& q, const std::vector<KVSegment>& segs, float scale, Tensor& out) {
  const int64_t R = q.dim(0), H = q.dim(1), Lq = q.dim(2), D = q.dim(3);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Lq; ++i) {
        const float* qi = q.f32() + ((r * H + h) * Lq + i) * D;
        kmath::OnlineSoftmax st = kmath::online_softmax_init();
        std::vector<float> acc(D, 0.0f);
        for (const auto& s : segs) {
          const int64_t len = s.row_len.empty() ? s.len : s.row_len[r], cap = s.k->dim(2);
          for (int64_t t0 = 0; t0 < len; t0 += kmath::kAttnKeyTile) {
            const int64_t n = std::min<int64_t>(kmath::kAttnKeyTile, len - t0);
            float score[kmath::kAttnKeyTile];
            float tile_max = -INFINITY;
            for (int lane = 0; lane < kmath::kAttnKeyTile; ++lane) {
              float dot = 0.0f;
              if (lane < n) {
                const float* k = s.k->f32() + ((r * H + h) * cap + t0 + lane) * D;
                for (int64_t d = 0; d < D; ++d) dot += qi[d] * k[d];
              }
              score[lane] = lane < n ? scale * dot : -INFINITY;
              tile_max = std::max(tile_max, score[lane]);
            }
            const float corr = kmath::online_softmax_enter(st, tile_max);
            float psum = 0.0f;
            for (int lane = 0; lane < kmath::kAttnKeyTile; ++lane) {
              score[lane] = kmath::online_softmax_weight(st, score[lane]);
              psum += score[lane];
            }
            st.l += psum;
            for (int64_t d = 0; d < D; ++d) acc[d] *= corr;
            for (int64_t j = 0; j < n; ++j) {
              const float* v = s.v->f32() + ((r * H + h) * cap + t0 + j) * D;
              for (int64_t d = 0; d < D; ++d) acc[d] += score[j] * v[d];
            }
          }
        }
        for (int64_t d = 0; d < D; ++d)
          out.f32()[((r * Lq + i) * H + h) * D + d] = kmath::online_softmax_finish(st, acc[d]);
      }
}

float bf16_round(float x) { return bf16_to_f32(f32_to_bf16(x)); }

// attention.cu's tensor-core kernel, sequentially: Q pre-scaled, Q/K/V rounded to bf16, key tiles of
// kTcKeys, FP32 scores and softmax, probabilities rounded to bf16 for P.V, FP32 accumulation.
void attention_tc_emulated(const Tensor& q, const std::vector<KVSegment>& segs, float scale, Tensor& out) {
  const int64_t R = q.dim(0), H = q.dim(1), Lq = q.dim(2), D = q.dim(3);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Lq; ++i) {
        std::vector<float> qs(D), acc(D, 0.0f);
        for (int64_t d = 0; d < D; ++d) qs[d] = bf16_round(scale * q.f32()[((r * H + h) * Lq + i) * D + d]);
        kmath::OnlineSoftmax st = kmath::online_softmax_init();
        for (const auto& s : segs) {
          const int64_t len = s.row_len.empty() ? s.len : s.row_len[r], cap = s.k->dim(2);
          for (int64_t t0 = 0; t0 < len; t0 += kmath::kTcKeys) {
            const int64_t n = std::min<int64_t>(kmath::kTcKeys, len - t0);
            std::vector<float> sc(kmath::kTcKeys, 0.0f);
            float mx = -INFINITY;
            for (int64_t j = 0; j < n; ++j) {
              const float* k = s.k->f32() + ((r * H + h) * cap + t0 + j) * D;
              for (int64_t d = 0; d < D; ++d) sc[j] += qs[d] * bf16_round(k[d]);
              mx = std::max(mx, sc[j]);
            }
            const float corr = kmath::online_softmax_enter(st, mx);
            float sum = 0.0f;
            for (int64_t d = 0; d < D; ++d) acc[d] *= corr;
            for (int64_t j = 0; j < n; ++j) {
              const float p = kmath::online_softmax_weight(st, sc[j]);
              sum += p;
              const float* v = s.v->f32() + ((r * H + h) * cap + t0 + j) * D;
              for (int64_t d = 0; d < D; ++d) acc[d] += bf16_round(p) * bf16_round(v[d]);
            }
            st.l += sum;
          }
        }
        for (int64_t d = 0; d < D; ++d)
          out.f32()[((r * Lq + i) * H + h) * D + d] = kmath::online_softmax_finish(st, acc[d]);
      }
}

// kv_select.cu's topk_keep_kernel, sequentially: four radix passes, then the ordered compaction.
std::vector<int32_t> topk_keep_emulated(const float* s, int64_t n, const std::vector<int32_t>& win, int64_t k) {
  auto is_win = [&](int64_t c) { return std::binary_search(win.begin(), win.end(), static_cast<int32_t>(c)); };
  kmath::RadixSelect sel = kmath::radix_select_init(k);
  for (int shift = 24; shift >= 0; shift -= 8) {
    int32_t hist[256] = {};
    for (int64_t c = 0; c < n; ++c) {
      if (is_win(c)) continue;
      const uint32_t key = kmath::float_order_key(s[c]);
      if (kmath::radix_select_matches(sel, key)) ++hist[kmath::radix_digit(key, shift)];
    }
    kmath::radix_select_step(sel, hist, shift);
  }
  std::vector<int32_t> out;
  int64_t eq_seen = 0;
  for (int64_t c = 0; c < n; ++c) {
    const bool w = is_win(c);
    const uint32_t key = kmath::float_order_key(s[c]);
    const bool eq = !w && key == sel.prefix;
    const bool take = w || (!w && key > sel.prefix) || (eq && eq_seen < sel.remaining);
    eq_seen += eq;
    if (take) out.push_back(static_cast<int32_t>(c));
  }
  return out;
}

// backend_cuda.cu's gather_tokens_kernel, sequentially: per (row, head), tiles of kGatherTile tokens,
// all reads of a tile before any of its writes.
void gather_emulated(Tensor& store, int64_t hist_len, const Tensor& cur, const std::vector<int32_t>& kept, int64_t n) {
  const int64_t RH = store.dim(0) * store.dim(1), cap = store.dim(2), D = store.dim(3), Lc = cur.dim(2);
  std::vector<float> buf(static_cast<size_t>(kmath::kGatherTile * D));
  for (int64_t rh = 0; rh < RH; ++rh) {
    float* st = store.f32() + rh * cap * D;
    const float* cu = cur.f32() + rh * Lc * D;
    for (int64_t j0 = 0; j0 < n; j0 += kmath::kGatherTile) {
      const int64_t nt = std::min<int64_t>(kmath::kGatherTile, n - j0);
      for (int64_t e = 0; e < nt * D; ++e) {
        const int64_t i = kept[rh * n + j0 + e / D];
        buf[e] = i < hist_len ? st[i * D + e % D] : cu[(i - hist_len) * D + e % D];
      }
      for (int64_t e = 0; e < nt * D; ++e) st[(j0 + e / D) * D + e % D] = buf[e];
    }
  }
}

}  // namespace

// The window-scoring kernel keeps all L logits of a (row, head) in dynamic shared memory next to its
// static arrays. Near 12K keys at head_dim 128 the dynamic bytes alone stay under the 48 KiB default
// while dynamic + static pass it: a launch that skipped the opt-in there failed. The rule counts both.
TEST(CudaKernelMath, SharedMemoryRuleCountsStaticBytes) {
  const int64_t D = 128, static_bytes = 32 * 4 + 32 * 8 + 256 * 4 + 16, optin = 227 * 1024;
  for (int64_t L = 11500; L <= 12300; ++L) {
    const int64_t dyn = (L + D) * 4;
    const int c = kmath::smem_launch_class(dyn, static_bytes, optin);
    EXPECT_EQ(c, dyn + static_bytes > kmath::kSmemDefaultLimit ? 1 : 0) << L;
    if (dyn <= kmath::kSmemDefaultLimit && dyn + static_bytes > kmath::kSmemDefaultLimit) EXPECT_EQ(c, 1) << L;
  }
  EXPECT_EQ(kmath::smem_launch_class(optin - 100, 200, optin), -1);  // past the device: an error, not a launch
  EXPECT_EQ(kmath::smem_launch_class(1000, 0, optin), 0);
}

TEST(CudaKernelMath, AttentionLaunchLimits) {
  EXPECT_EQ(kmath::attention_launch_limit(32, 28, 128), nullptr);  // Infinity-8B, batch 16 with CFG
  EXPECT_NE(kmath::attention_launch_limit(4096, 32, 64), nullptr);  // 131072 (row, head) blocks: one launch cannot
  EXPECT_NE(kmath::attention_launch_limit(1, 1, 257), nullptr);
  EXPECT_EQ(kmath::attention_launch_limit(1, 1, 256), nullptr);
}

TEST(CudaKernelMath, OnlineSoftmaxMatchesSoftmax) {
  std::mt19937 g(1);
  std::normal_distribution<float> d(0.0f, 3.0f);
  std::vector<float> s(77), v(77);
  for (auto& x : s) x = d(g);
  for (auto& x : v) x = d(g);
  kmath::OnlineSoftmax st = kmath::online_softmax_init();
  float acc = 0.0f;
  for (size_t t0 = 0; t0 < s.size(); t0 += 32) {  // tiles of 32, as the kernel
    float mx = -INFINITY;
    for (size_t j = t0; j < std::min(s.size(), t0 + 32); ++j) mx = std::max(mx, s[j]);
    acc *= kmath::online_softmax_enter(st, mx);
    for (size_t j = t0; j < std::min(s.size(), t0 + 32); ++j) {
      const float p = kmath::online_softmax_weight(st, s[j]);
      st.l += p;
      acc += p * v[j];
    }
  }
  double mx = *std::max_element(s.begin(), s.end()), z = 0, ref = 0;
  for (size_t j = 0; j < s.size(); ++j) z += std::exp(s[j] - mx);
  for (size_t j = 0; j < s.size(); ++j) ref += std::exp(s[j] - mx) / z * v[j];
  EXPECT_NEAR(kmath::online_softmax_finish(st, acc), ref, 1e-5);
  // Nothing seen: 0, like the CPU backend's empty attention; a tile of only -inf changes nothing.
  kmath::OnlineSoftmax e = kmath::online_softmax_init();
  EXPECT_EQ(kmath::online_softmax_enter(e, -INFINITY), 0.0f);
  EXPECT_EQ(kmath::online_softmax_weight(e, -INFINITY), 0.0f);
  EXPECT_EQ(kmath::online_softmax_finish(e, 0.0f), 0.0f);
}

TEST(CudaKernelMath, AttentionTilingMatchesCpuBackend) {
  // Odd sizes, a segment longer than one tile, one shorter, an empty one and per-row lengths.
  struct Case {
    int R, H, Lq, D, cap1, len1, L2;
  };
  for (const Case c : {Case{2, 3, 5, 8, 70, 67, 4}, Case{1, 2, 17, 33, 40, 0, 31}, Case{3, 1, 1, 64, 32, 32, 1},
                       Case{2, 2, 9, 7, 100, 97, 33}}) {
    Tensor q = randn({c.R, c.H, c.Lq, c.D}, 1), k1 = randn({c.R, c.H, c.cap1, c.D}, 2), v1 = randn({c.R, c.H, c.cap1, c.D}, 3);
    Tensor k2 = randn({c.R, c.H, c.L2, c.D}, 4), v2 = randn({c.R, c.H, c.L2, c.D}, 5);
    std::vector<KVSegment> segs{{&k1, &v1, c.len1, {}}, {&k2, &v2, c.L2, {}}};
    Tensor want = Tensor::empty({c.R, c.Lq, c.H * c.D}), got = Tensor::empty({c.R, c.Lq, c.H * c.D});
    cpu().attention(q, segs, 0.3f, want);
    attention_emulated(q, segs, 0.3f, got);
    EXPECT_LT(max_abs_diff(got, want), 2e-5) << "R" << c.R << " H" << c.H << " Lq" << c.Lq << " D" << c.D;
    std::vector<int64_t> rl;
    for (int r = 0; r < c.R; ++r) rl.push_back(std::min(c.cap1, 1 + 29 * r));
    std::vector<KVSegment> segs_rl{{&k1, &v1, 0, rl}, {&k2, &v2, c.L2, {}}};
    cpu().attention(q, segs_rl, 0.3f, want);
    attention_emulated(q, segs_rl, 0.3f, got);
    EXPECT_LT(max_abs_diff(got, want), 2e-5);
  }
}

TEST(CudaKernelMath, TensorCoreAttentionMathIsWithinBf16OfCpu) {
  for (auto [R, H, Lq, D, len1, L2] : {std::tuple{2, 2, 5, 64, 130, 7}, std::tuple{1, 3, 17, 128, 64, 1},
                                       std::tuple{1, 1, 3, 16, 0, 65}}) {
    Tensor q = randn({R, H, Lq, D}, 1), k1 = randn({R, H, 150, D}, 2), v1 = randn({R, H, 150, D}, 3);
    Tensor k2 = randn({R, H, L2, D}, 4), v2 = randn({R, H, L2, D}, 5);
    std::vector<KVSegment> segs{{&k1, &v1, len1, {}}, {&k2, &v2, L2, {}}};
    Tensor want = Tensor::empty({R, Lq, H * D}), got = Tensor::empty({R, Lq, H * D});
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    cpu().attention(q, segs, scale, want);
    attention_tc_emulated(q, segs, scale, got);
    double num = 0, den = 0;
    for (int64_t i = 0; i < want.numel(); ++i) {
      num += std::pow(got.f32()[i] - want.f32()[i], 2);
      den += std::pow(want.f32()[i], 2);
    }
    EXPECT_LT(num / den, 1e-4) << "D " << D;  // the bound tests/cuda uses for the kernel itself
    EXPECT_GT(num / den, 1e-9) << "D " << D;  // and bf16 rounding is visible
  }
}

TEST(CudaKernelMath, TensorCoreAttentionLayoutKeepsWmmaTilesAligned) {
  for (int64_t D = 16; D <= 128; D += 16) {
    const kmath::TcAttnLayout t = kmath::tc_attn_layout(D);
    for (int64_t off : {t.q, t.k, t.v, t.s, t.p, t.o, t.s_warp, t.p_warp, t.o_warp}) EXPECT_EQ(off % 32, 0) << "D " << D;
    // tile starts: 16-row steps of bf16 rows (ldh, ldp) and FP32 rows (lds, ldo), 16-column steps
    EXPECT_EQ(16 * t.ldh * 2 % 32, 0);
    EXPECT_EQ(16 * 2 % 32, 0);
    EXPECT_EQ(16 * 4 % 32, 0);
    EXPECT_EQ(t.ldh % 8, 0);  // WMMA ldm: a multiple of 8 for 16-bit, of 4 for 32-bit elements
    EXPECT_EQ(t.ldp % 8, 0);
    EXPECT_EQ(t.lds % 4, 0);
    EXPECT_EQ(t.ldo % 4, 0);
    EXPECT_LE(t.bytes, 163 * 1024) << "fits an A100's opt-in shared memory";
  }
}

TEST(CudaKernelMath, FloatOrderKeyIsMonotonic) {
  const std::vector<float> v = {-INFINITY, -3e38f, -2.0f, -1.0f, -1e-30f, 0.0f, 1e-30f, 1.0f, 2.5f, 3e38f, INFINITY};
  for (size_t i = 0; i + 1 < v.size(); ++i)
    EXPECT_LT(kmath::float_order_key(v[i]), kmath::float_order_key(v[i + 1])) << v[i] << " < " << v[i + 1];
  EXPECT_EQ(kmath::float_order_key(-0.0f), kmath::float_order_key(0.0f));  // equal values tie
  for (float f : v) EXPECT_EQ(kmath::float_from_order_key(kmath::float_order_key(f)), f) << f;  // and it inverts
}

// kv_select.cu's select_kept, sequentially (the pooling kernel's pool_at, then topk_keep_kernel) against
// the host selection stage of kvcache/selection.h: random rows with few distinct values (many ties), both
// signs, -inf and +-0, windows of up to kMaxKeepWindow columns, masked or not, max and average pooling.
TEST(CudaKernelMath, DeviceSelectionStageMatchesTheHostOne) {
  std::mt19937 g(7);
  for (int trial = 0; trial < 120; ++trial) {
    const int64_t n = 1 + g() % (trial < 100 ? 300 : 3000);
    KeepSpec spec;
    const int64_t every = trial < 100 ? 9 : 3;
    for (int64_t c = 0; c < n; ++c)
      if (g() % every == 0 && static_cast<int64_t>(spec.window.size()) < kMaxKeepWindow) spec.window.push_back(c);
    const int64_t nw = static_cast<int64_t>(spec.window.size());
    spec.budget = nw + (n == nw ? 0 : static_cast<int64_t>(g() % (n - nw + 1)));
    spec.kernel = 1 + 2 * static_cast<int>(g() % 3);
    spec.pool = g() % 2 ? PoolKind::Max : PoolKind::Avg;
    spec.mask_window_keys = g() % 2;
    std::vector<float> s(static_cast<size_t>(n));
    for (auto& v : s) {
      const int r = static_cast<int>(g() % 13);
      v = r == 0 && spec.pool == PoolKind::Max ? -INFINITY : r == 1 ? -0.0f : r == 2 ? 0.0f : static_cast<float>(r % 5) - 2.0f;
    }
    RowSelection want;
    select_row(s.data(), n, spec, want);
    const std::vector<int32_t> win(spec.window.begin(), spec.window.end());
    std::vector<float> pooled(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      pooled[i] = kmath::pool_at(s.data(), n, i, spec.kernel, spec.pool == PoolKind::Max, win.data(), static_cast<int>(nw),
                                 spec.mask_window_keys);
    const auto got = topk_keep_emulated(pooled.data(), n, win, spec.budget - nw);
    ASSERT_EQ(got.size(), want.kept.size()) << "trial " << trial;
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want.kept[i]) << "trial " << trial << " at " << i;
  }
}

// The radix top-k on the official ScaleKV records: the kept sets of all 24 compressions, tie rule included.
TEST(CudaKernelMath, RadixTopkReproducesTheOfficialScaleKVRecords) {
  const char* env = std::getenv("SKV_GOLDEN_DIR");
  const std::string path = std::string(env ? env : SKV_GOLDEN_DIR_DEFAULT) + "/infinity-tiny.scalekv.expected.safetensors";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " is absent";
  SafeTensors st(path);
  int records = 0;
  for (int si = 0; si < 13; ++si)
    for (int l = 0; l < 64; ++l) {
      const std::string p = fmt::format("kv.{}.{}.", si, l);
      if (!st.contains(p + "kept")) continue;
      ++records;
      Tensor pooled = st.load(p + "pooled", MemCategory::Workspace);
      Tensor kept = st.load_raw(p + "kept"), window = st.load_raw(p + "window");
      const int64_t RH = pooled.dim(0) * pooled.dim(1), n = pooled.dim(2), budget = kept.dim(2);
      for (int64_t rh = 0; rh < RH; ++rh) {
        std::vector<int32_t> win;
        for (int i = 0; i < 16; ++i) win.push_back(static_cast<int32_t>(window.data<int64_t>()[rh * 16 + i]));
        const auto got = topk_keep_emulated(pooled.f32() + rh * n, n, win, budget - 16);
        ASSERT_EQ(static_cast<int64_t>(got.size()), budget) << p;
        for (int64_t j = 0; j < budget; ++j) ASSERT_EQ(got[j], kept.data<int64_t>()[rh * budget + j]) << p << " row-head " << rh;
      }
    }
  EXPECT_EQ(records, 24);
}

TEST(CudaKernelMath, Im2colSourceMatchesCpuConv) {
  for (int ks : {1, 3, 4}) {
    for (int stride : {1, 2}) {
      const int N = 1, Ci = 3, Co = 2, H = 7, W = 5, pad = ks / 2;
      Tensor x = randn({N, Ci, H, W}, 30), w = randn({Co, Ci, ks, ks}, 31);
      const int Ho = (H + 2 * pad - ks) / stride + 1, Wo = (W + 2 * pad - ks) / stride + 1;
      Tensor want = Tensor::empty({N, Co, Ho, Wo});
      cpu().conv2d(x, w, nullptr, stride, pad, want);
      const int64_t Kc = Ci * ks * ks, P = Ho * Wo;
      for (int co = 0; co < Co; ++co)
        for (int64_t p = 0; p < P; ++p) {
          double s = 0;
          for (int64_t k = 0; k < Kc; ++k) {
            const int64_t src = kmath::im2col_source(k, p, H, W, ks, ks, Wo, stride, pad);
            if (src >= 0) s += x.f32()[src] * w.f32()[co * Kc + k];
          }
          EXPECT_NEAR(want.f32()[co * P + p], s, 1e-5) << "ks " << ks << " stride " << stride;
        }
    }
  }
}

TEST(CudaKernelMath, InterpolationPerElementMatchesCpuBackend) {
  Tensor x = randn({2, 3, 7, 5}, 40);
  for (auto [Ho, Wo] : {std::pair{3, 2}, std::pair{14, 11}, std::pair{7, 5}, std::pair{4, 9}}) {
    for (Interp m : {Interp::Nearest, Interp::Bilinear, Interp::Bicubic, Interp::Area}) {
      Tensor want = Tensor::empty({2, 3, Ho, Wo});
      cpu().interpolate(x, m, want);
      for (int64_t c = 0; c < 6; ++c)
        for (int64_t oy = 0; oy < Ho; ++oy)
          for (int64_t ox = 0; ox < Wo; ++ox) {
            const float* p = x.f32() + c * 35;
            float got = 0;
            switch (m) {
              case Interp::Nearest: got = p[nearest_src(7, Ho, oy) * 5 + nearest_src(5, Wo, ox)]; break;
              case Interp::Bilinear: got = kmath::bilinear_at(p, 5, linear_tap(7, Ho, oy), linear_tap(5, Wo, ox)); break;
              case Interp::Bicubic: got = kmath::bicubic_at(p, 7, 5, Ho, Wo, oy, ox); break;
              case Interp::Area: got = area_at(p, 7, 5, Ho, Wo, oy, ox); break;
              default: break;
            }
            ASSERT_EQ(got, want.f32()[(c * Ho + oy) * Wo + ox]) << interp_name(m) << " " << Ho << "x" << Wo;
          }
    }
  }
  Tensor x5 = randn({1, 2, 3, 4, 5}, 41), want5 = Tensor::empty({1, 2, 2, 7, 3});
  cpu().interpolate(x5, Interp::Trilinear, want5);
  for (int64_t c = 0; c < 2; ++c)
    for (int64_t ot = 0; ot < 2; ++ot)
      for (int64_t oy = 0; oy < 7; ++oy)
        for (int64_t ox = 0; ox < 3; ++ox)
          ASSERT_EQ(kmath::trilinear_at(x5.f32() + c * 60, 3, 4, 5, 2, 7, 3, ot, oy, ox),
                    want5.f32()[((c * 2 + ot) * 7 + oy) * 3 + ox]);
}

TEST(CudaKernelMath, TiledInPlaceGatherMatchesSequential) {
  std::mt19937 g(3);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t R = 2, H = 2, D = 3, cap = 40 + g() % 60, hist = g() % (cap + 1), Lc = 1 + g() % 50;
    const int64_t total = hist + Lc, n = std::min<int64_t>(cap, 1 + g() % total);
    Tensor store = randn({R, H, cap, D}, 100 + trial), cur = randn({R, H, Lc, D}, 200 + trial);
    std::vector<int32_t> kept;
    for (int64_t rh = 0; rh < R * H; ++rh) {  // n ascending indices out of [0, total); often kept[j] = j + small
      std::vector<int32_t> all(static_cast<size_t>(total));
      for (int64_t i = 0; i < total; ++i) all[i] = static_cast<int32_t>(i);
      std::shuffle(all.begin(), all.end(), g);
      all.resize(static_cast<size_t>(n));
      std::sort(all.begin(), all.end());
      kept.insert(kept.end(), all.begin(), all.end());
    }
    Tensor want = store.clone(), got = store.clone();
    Tensor kt = Tensor::external(kept.data(), {R, H, n}, DType::I32);
    cpu().gather_tokens(want, hist, cur, kt, n);
    gather_emulated(got, hist, cur, kept, n);
    ASSERT_EQ(max_abs_diff(got, want), 0.0) << "trial " << trial;
  }
}

}  // namespace skv
