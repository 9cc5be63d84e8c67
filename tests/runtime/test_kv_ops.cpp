// The KV-policy ops of the CPU backend against naive loops: gather through a slot map (in place, with a
// scrambled map), attention over pool extents (segment start), window scores, attention mass.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "runtime/backend.h"
#include "runtime/check.h"
#include "test_util.h"

namespace skv {

namespace {

Backend& be() { return cpu_backend(); }

std::vector<double> softmax(std::vector<double> v) {
  const double m = *std::max_element(v.begin(), v.end());
  double s = 0;
  for (double& x : v) s += (x = std::exp(x - m));
  for (double& x : v) x /= s;
  return v;
}

}  // namespace

TEST(KVOps, GatherSlotsCompactsInPlaceThroughAScrambledMap) {
  const int64_t R = 2, H = 2, S = 12, D = 3, hist = 5, Lc = 4;
  Tensor pool = test::randn({R, H, S, D}, 1), cur = test::randn({R, H, Lc, D}, 2);
  const Tensor orig = pool.clone();
  std::vector<int32_t> slot = {7, 2, 9, 0, 11, 4};  // logical token -> pool slot (non-monotone)
  std::vector<int32_t> kept = {0, 2, 4, 5, 8, 1, 3, 5, 6, 7, 0, 1, 2, 3, 4, 2, 4, 6, 7, 8};  // [R, H, 5]
  const int64_t n = 5;
  Tensor st = Tensor::external(slot.data(), {6}, DType::I32), kt = Tensor::external(kept.data(), {R, H, n}, DType::I32);
  be().gather_slots(pool, st, hist, cur, kt, n);
  for (int64_t rh = 0; rh < R * H; ++rh)
    for (int64_t j = 0; j < n; ++j) {
      const int64_t i = kept[rh * n + j];
      const float* want = i < hist ? orig.f32() + (rh * S + slot[i]) * D : cur.f32() + (rh * Lc + i - hist) * D;
      const float* got = pool.f32() + (rh * S + slot[j]) * D;
      for (int64_t d = 0; d < D; ++d) ASSERT_EQ(got[d], want[d]) << rh << " " << j;
    }
  // untouched slots keep their values
  for (int64_t rh = 0; rh < R * H; ++rh)
    for (int64_t s : {1, 3, 5, 6, 8, 10}) EXPECT_EQ(pool.f32()[(rh * S + s) * D], orig.f32()[(rh * S + s) * D]);
  std::vector<int32_t> bad_slot = {0, 1, 99, 3, 4, 5};
  Tensor bt = Tensor::external(bad_slot.data(), {6}, DType::I32);
  EXPECT_THROW(be().gather_slots(pool, bt, hist, cur, kt, n), Error);
}

TEST(KVOps, AttentionOverPoolExtentsEqualsContiguousAttention) {
  const int64_t R = 2, H = 3, Lq = 5, D = 8, S = 20;
  Tensor q = test::randn({R, H, Lq, D}, 3), pk = test::randn({R, H, S, D}, 4), pv = test::randn({R, H, S, D}, 5);
  // keys = slots [3, 7) then [12, 18)
  Tensor ck = Tensor::empty({R, H, 10, D}), cv = Tensor::empty({R, H, 10, D});
  for (int64_t rh = 0; rh < R * H; ++rh)
    for (int64_t j = 0; j < 10; ++j) {
      const int64_t s = j < 4 ? 3 + j : 12 + (j - 4);
      std::copy_n(pk.f32() + (rh * S + s) * D, D, ck.f32() + (rh * 10 + j) * D);
      std::copy_n(pv.f32() + (rh * S + s) * D, D, cv.f32() + (rh * 10 + j) * D);
    }
  Tensor a = Tensor::empty({R, Lq, H * D}), b = Tensor::empty({R, Lq, H * D});
  be().attention(q, {{&pk, &pv, 4, {}, 3}, {&pk, &pv, 6, {}, 12}}, 0.3f, a);
  be().attention(q, {{&ck, &cv, 10, {}, 0}}, 0.3f, b);
  EXPECT_LT(test::max_abs_diff(a, b), 1e-6);
  EXPECT_THROW(be().attention(q, {{&pk, &pv, 6, {}, 15}}, 0.3f, a), Error);  // beyond the pool
}

// The cache hands attention and the selection statistics one segment per extent, and a layer of a
// 10- or 13-scale schedule whose store interleaves with other layers has dozens of them: 70 extents
// plus the current scale must give what one contiguous copy of the same keys gives.
TEST(KVOps, SeventyExtentsEqualOneContiguousSegment) {
  const int64_t R = 2, H = 2, Lq = 7, D = 16, S = 600;
  const auto ext = test::scattered_extents(70, S, 12);
  Tensor q = test::randn({R, H, Lq, D}, 13), pk = test::randn({R, H, S, D}, 14), pv = test::randn({R, H, S, D}, 15);
  Tensor ck = test::randn({R, H, Lq, D}, 16), cv = test::randn({R, H, Lq, D}, 17);
  Tensor hk = test::gather_extents(pk, ext), hv = test::gather_extents(pv, ext);
  const int64_t Lh = hk.dim(2);
  std::vector<KVSegment> many;
  for (const auto& [start, len] : ext) many.push_back({&pk, &pv, len, {}, start});
  many.push_back({&ck, &cv, Lq, {}, 0});
  const std::vector<KVSegment> one = {{&hk, &hv, Lh, {}, 0}, {&ck, &cv, Lq, {}, 0}};
  ASSERT_GE(many.size(), 64u);
  Tensor a = Tensor::empty({R, Lq, H * D}), b = Tensor::empty({R, Lq, H * D});
  be().attention(q, many, 0.25f, a);
  be().attention(q, one, 0.25f, b);
  EXPECT_LT(test::max_abs_diff(a, b), 1e-6);
  const std::vector<int64_t> qi = {0, 3, 6};
  Tensor sa = Tensor::empty({R, H, Lh + Lq}), sb = Tensor::empty({R, H, Lh + Lq});
  for (ScoreMode m : {ScoreMode::RawSum, ScoreMode::SoftmaxMean}) {
    be().window_scores(q, qi, many, 0.25f, m, sa);
    be().window_scores(q, qi, one, 0.25f, m, sb);
    EXPECT_LT(test::max_abs_diff(sa, sb), 1e-6);
  }
  Tensor ma = Tensor::empty({R, H, 2}), mb = Tensor::empty({R, H, 2});
  be().attention_mass(q, qi, many, Lh, 0.25f, 5, ma);
  be().attention_mass(q, qi, one, Lh, 0.25f, 5, mb);
  EXPECT_LT(test::max_abs_diff(ma, mb), 1e-6);
}

TEST(KVOps, WindowScoresMatchNaiveSums) {
  const int64_t R = 2, H = 2, Lq = 6, D = 4, Lh = 5;
  Tensor q = test::randn({R, H, Lq, D}, 6), hk = test::randn({R, H, 9, D}, 7), ck = test::randn({R, H, Lq, D}, 8);
  const std::vector<int64_t> qi = {1, 4, 4};  // repeats allowed (the reference fallback clamps)
  std::vector<KVSegment> segs = {{&hk, &hk, Lh, {}, 2}, {&ck, &ck, Lq, {}, 0}};
  const int64_t L = Lh + Lq;
  Tensor raw = Tensor::empty({R, H, L}), soft = Tensor::empty({R, H, L});
  be().window_scores(q, qi, segs, 0.5f, ScoreMode::RawSum, raw);
  be().window_scores(q, qi, segs, 0.5f, ScoreMode::SoftmaxMean, soft);
  for (int64_t rh = 0; rh < R * H; ++rh) {
    std::vector<std::vector<double>> logits;
    for (int64_t i : qi) {
      std::vector<double> row;
      for (int64_t j = 0; j < L; ++j) {
        const float* k = j < Lh ? hk.f32() + (rh * 9 + 2 + j) * D : ck.f32() + (rh * Lq + j - Lh) * D;
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += q.f32()[(rh * Lq + i) * D + d] * k[d];
        row.push_back(0.5 * dot);
      }
      logits.push_back(row);
    }
    for (int64_t j = 0; j < L; ++j) {
      double s = 0, p = 0;
      for (const auto& row : logits) {
        s += row[j];
        p += softmax(row)[j] / qi.size();
      }
      EXPECT_NEAR(raw.f32()[rh * L + j], s, 1e-5);
      EXPECT_NEAR(soft.f32()[rh * L + j], p, 1e-6);
    }
  }
}

TEST(KVOps, AttentionMassSplitsCurrentAndTopHistory) {
  const int64_t R = 1, H = 2, Lq = 4, D = 4, Lh = 6;
  Tensor q = test::randn({R, H, Lq, D}, 9), hk = test::randn({R, H, Lh, D}, 10), ck = test::randn({R, H, Lq, D}, 11);
  const std::vector<int64_t> qi = {0, 3};
  Tensor out = Tensor::empty({R, H, 2});
  be().attention_mass(q, qi, {{&hk, &hk, Lh, {}, 0}, {&ck, &ck, Lq, {}, 0}}, Lh, 0.7f, 2, out);
  for (int64_t h = 0; h < H; ++h) {
    double cur = 0, top = 0;
    for (int64_t i : qi) {
      std::vector<double> row;
      for (int64_t j = 0; j < Lh + Lq; ++j) {
        const float* k = j < Lh ? hk.f32() + (h * Lh + j) * D : ck.f32() + (h * Lq + j - Lh) * D;
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += q.f32()[(h * Lq + i) * D + d] * k[d];
        row.push_back(0.7 * dot);
      }
      const auto p = softmax(row);
      cur += std::accumulate(p.begin() + Lh, p.end(), 0.0) / qi.size();
      std::vector<double> hist(p.begin(), p.begin() + Lh);
      std::sort(hist.rbegin(), hist.rend());
      top += (hist[0] + hist[1]) / qi.size();
    }
    EXPECT_NEAR(out.f32()[h * 2], cur, 1e-6);
    EXPECT_NEAR(out.f32()[h * 2 + 1], top, 1e-6);
  }
}

}  // namespace skv
