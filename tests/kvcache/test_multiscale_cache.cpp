#include <gtest/gtest.h>

#include "kvcache/multiscale_cache.h"
#include "runtime/check.h"
#include "test_util.h"

namespace skv {

namespace {

// Keeps the last `keep` tokens of every layer (a tiny stand-in policy for the cache mechanics).
class KeepLast final : public KVPolicy {
 public:
  explicit KeepLast(int64_t keep) : keep_(keep) {}
  std::string name() const override { return "keep-last"; }
  int64_t budget(int, int, int64_t total) const override { return std::min(total, keep_); }
  void select(const CompressionInput& in, int64_t budget, std::vector<int32_t>& kept) override {
    const int64_t total = in.hist_len + in.cur_len, RH = in.cur_k->dim(0) * in.cur_k->dim(1);
    kept.clear();
    for (int64_t rh = 0; rh < RH; ++rh)
      for (int64_t j = total - budget; j < total; ++j) kept.push_back(static_cast<int32_t>(j));
  }

 private:
  int64_t keep_;
};

void fill_scale(MultiScaleKVCache& c, float base) {
  for (int64_t i = 0; i < c.cur_k().numel(); ++i) {
    c.cur_k().f32()[i] = base + i;
    c.cur_v().f32()[i] = -(base + i);
  }
}

}  // namespace

TEST(Schedule, OffsetsAndCachedLength) {
  Schedule s = Schedule::square({1, 2, 3, 4});
  EXPECT_EQ(s.total(), 30);
  EXPECT_EQ(s.offset(2), 5);
  EXPECT_EQ(s.cached_before_last(), 14);
  EXPECT_EQ(s.max_scale_tokens(), 16);
  EXPECT_THROW(Schedule(std::vector<ScaleShape>{}), Error);
}

TEST(MultiScaleKVCache, FullPolicyAppendsUpToTheLastScale) {
  Schedule s = Schedule::square({1, 2, 3});
  auto full = make_full_policy();
  const auto cap = plan_store_capacity(*full, s, 2);
  EXPECT_EQ(cap, (std::vector<int64_t>{5, 5}));  // the 3x3 scale is never stored
  MultiScaleKVCache c(cpu_backend(), 2, 1, 2, cap);
  for (int si = 0; si < 2; ++si) {
    c.begin_scale(s.tokens(si), s.offset(si));
    fill_scale(c, 10.0f * si);
    for (int l = 0; l < 2; ++l) c.update(l, si, *full, s, nullptr, 1.0f, 0);
    c.end_scale();
  }
  EXPECT_EQ(c.layer(0).len, 5);
  EXPECT_EQ(c.layer(1).pos[4], 4);
  // row 1 (head 0), token 1 of scale 1 sits in slot 2 with the value written for it
  const auto& L = c.layer(0);
  EXPECT_EQ(L.k.f32()[(1 * 5 + 2) * 2], 10.0f + (1 * 4 + 1) * 2);
  EXPECT_EQ(L.v.f32()[(1 * 5 + 2) * 2], -(10.0f + (1 * 4 + 1) * 2));
}

TEST(MultiScaleKVCache, CompactionStaysWithinBudgetAndTracksPositions) {
  Schedule s = Schedule::square({1, 2, 3, 4});
  KeepLast pol(6);
  const auto cap = plan_store_capacity(pol, s, 1);
  EXPECT_EQ(cap[0], 6);
  MultiScaleKVCache c(cpu_backend(), 1, 2, 1, cap);
  for (int si = 0; si < 3; ++si) {
    c.begin_scale(s.tokens(si), s.offset(si));
    for (int64_t i = 0; i < c.cur_k().numel(); ++i) c.cur_k().f32()[i] = static_cast<float>(s.offset(si) + i % s.tokens(si));
    c.update(0, si, pol, s, nullptr, 1.0f, 0);
    c.end_scale();
  }
  const auto& L = c.layer(0);
  EXPECT_EQ(L.len, 6);
  for (int j = 0; j < 6; ++j) {
    EXPECT_EQ(L.pos[j], 8 + j);              // the last 6 of 14 tokens
    EXPECT_EQ(L.k.f32()[j], 8.0f + j);       // values follow their positions
    EXPECT_EQ(L.pos[6 + j], 8 + j);          // head 1
  }
}

TEST(MultiScaleKVCache, RejectsBadSelections) {
  Schedule s = Schedule::square({1, 2});
  MultiScaleKVCache c(cpu_backend(), 1, 1, 1, {5});
  c.begin_scale(1, 0);
  c.append_current(0);
  c.end_scale();
  c.begin_scale(4, 1);
  EXPECT_THROW(c.compact(0, {3, 1}, 2), Error);     // not ascending
  EXPECT_THROW(c.compact(0, {0, 9}, 2), Error);     // out of range
  EXPECT_THROW(c.compact(0, {0, 1, 2}, 2), Error);  // wrong count
  c.append_current(0);
  EXPECT_THROW(c.append_current(0), Error);  // beyond capacity
}

}  // namespace skv

namespace skv {

TEST(Schedule, InfinityDynamicResolutionTable) {
  const Schedule s = infinity_schedule(1.0, "1M");
  EXPECT_EQ(s.num_scales(), 13);
  EXPECT_EQ(s.total(), 10521);
  EXPECT_EQ(s.cached_before_last(), 6425);
  EXPECT_EQ(infinity_schedule(1.0, "0.25M").total(), 1 + 4 + 16 + 36 + 64 + 144 + 256 + 400 + 576 + 1024);
  const Schedule tall = infinity_schedule(2.0, "1M"), wide = infinity_schedule(0.5, "1M");
  EXPECT_EQ(tall[12].h, 90);
  EXPECT_EQ(tall[12].w, 45);
  EXPECT_EQ(wide[12].h, 45);
  EXPECT_EQ(wide[12].w, 90);
  EXPECT_EQ(infinity_schedule(0.333, "0.06M")[6].w, 27);  // int(1/3 * 1000) / 1000
  EXPECT_EQ(infinity_aspect_ratios().size(), 15u);
  for (double r : infinity_aspect_ratios())
    for (const char* p : {"0.06M", "0.25M", "0.60M", "1M"}) {
      const Schedule x = infinity_schedule(r, p);
      EXPECT_NEAR(static_cast<double>(x[x.num_scales() - 1].h) / x[x.num_scales() - 1].w, r, 0.01);
    }
  try {
    infinity_schedule(1.1, "1M");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("valid: 0.333"), std::string::npos) << e.what();
  }
  EXPECT_THROW(infinity_schedule(1.0, "2M"), Error);
  EXPECT_EQ(infinity_pixels_for_resolution(1024), "1M");
  EXPECT_THROW(infinity_pixels_for_resolution(640), Error);
}

}  // namespace skv
