// The KV-policy ops of the CPU backend against naive loops: gather across a store's extents (in place),
// attention over extents (segment start), window scores, attention mass.
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

// A store's extents as one contiguous [R, H, sum of lengths, D] copy (token order).
Tensor flatten_extents(const std::vector<KVExtent>& ext) {
  const Tensor& t0 = *ext[0].t;
  const int64_t R = t0.dim(0), H = t0.dim(1), D = t0.dim(3);
  int64_t len = 0;
  for (const KVExtent& e : ext) len += e.len;
  Tensor out = Tensor::empty({R, H, len, D});
  for (int64_t rh = 0; rh < R * H; ++rh) {
    int64_t t = 0;
    for (const KVExtent& e : ext)
      for (int64_t i = 0; i < e.len; ++i, ++t)
        std::copy_n(e.t->f32() + (rh * e.t->dim(2) + e.start + i) * D, D, out.f32() + (rh * len + t) * D);
  }
  return out;
}

TEST(KVOps, GatherExtentsCompactsInPlaceAcrossExtents) {
  const int64_t R = 2, H = 2, D = 3, hist = 5, Lc = 4, n = 6;
  // Two chunks of a pool; the store's extents: chunk B [4, 6), chunk A [1, 4), chunk A [5, 9) (9 tokens).
  Tensor a = test::randn({R, H, 10, D}, 1), b = test::randn({R, H, 6, D}, 2);
  const Tensor a0 = a.clone(), b0 = b.clone();
  std::vector<KVExtent> store = {{&b, 4, 2}, {&a, 1, 3}, {&a, 5, 4}};
  Tensor cur = test::randn({R, H, Lc, D}, 4);
  // kept [R, H, 6], ascending: history tokens cross extents, the current tokens follow
  std::vector<int32_t> kept = {0, 2, 4, 5, 7, 8, 1, 3, 4, 6, 7, 8, 0, 1, 2, 3, 4, 5, 2, 3, 5, 6, 7, 8};
  Tensor want = flatten_extents(store);
  const int64_t cap = want.dim(2);
  for (int64_t rh = 0; rh < R * H; ++rh)  // the definition, j ascending
    for (int64_t j = 0; j < n; ++j) {
      const int64_t i = kept[rh * n + j];
      const float* src = i < hist ? want.f32() + (rh * cap + i) * D : cur.f32() + (rh * Lc + i - hist) * D;
      std::copy_n(src, D, want.f32() + (rh * cap + j) * D);
    }
  Tensor kt = Tensor::external(kept.data(), {R, H, n}, DType::I32);
  be().gather_extents(store, hist, cur, kt, 0, n);
  EXPECT_EQ(test::max_abs_diff(flatten_extents(store), want), 0.0);
  for (int64_t rh = 0; rh < R * H; ++rh) {  // slots outside the extents are untouched
    for (int64_t s : {0, 4, 9}) EXPECT_EQ(a.f32()[(rh * 10 + s) * D], a0.f32()[(rh * 10 + s) * D]) << s;
    for (int64_t s = 0; s < 4; ++s) EXPECT_EQ(b.f32()[(rh * 6 + s) * D], b0.f32()[(rh * 6 + s) * D]) << s;
  }

  // An append: tokens [5, 9) from the transient, one identity list shared by every (row, head).
  Tensor before = flatten_extents(store);
  std::vector<int32_t> id(9);
  std::iota(id.begin(), id.end(), 0);
  Tensor it = Tensor::external(id.data(), {9}, DType::I32);
  be().gather_extents(store, hist, cur, it, hist, 9);
  Tensor after = flatten_extents(store);
  for (int64_t rh = 0; rh < R * H; ++rh)
    for (int64_t t = 0; t < 9; ++t)
      for (int64_t d = 0; d < D; ++d)
        ASSERT_EQ(after.f32()[(rh * 9 + t) * D + d],
                  t < hist ? before.f32()[(rh * 9 + t) * D + d] : cur.f32()[(rh * Lc + t - hist) * D + d]);

  std::vector<int32_t> bad = kept;
  bad[1] = 0;  // not ascending
  EXPECT_THROW(be().gather_extents(store, hist, cur, Tensor::external(bad.data(), {R, H, n}, DType::I32), 0, n), Error);
  std::vector<int32_t> id10(10);
  std::iota(id10.begin(), id10.end(), 0);
  EXPECT_THROW(be().gather_extents(store, hist, cur, Tensor::external(id10.data(), {10}, DType::I32), hist, 10),
               Error);  // past the extents
  EXPECT_THROW(be().gather_extents({{&b, 4, 3}}, 0, cur, it, 0, 3), Error);  // past the chunk
  Tensor odd = test::randn({R, H + 1, 2, D}, 5);
  EXPECT_THROW(be().gather_extents({{&a, 0, 2}, {&odd, 0, 2}}, 2, cur, it, 2, 3), Error);  // different shapes
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
// plus the current scale must give what one contiguous copy of the same keys gives. Attention gives it
// bit for bit: how a store is split into extents (which pages a request got) never changes a token.
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
  EXPECT_EQ(test::max_abs_diff(a, b), 0.0);
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
