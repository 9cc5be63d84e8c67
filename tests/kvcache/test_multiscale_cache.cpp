// The multi-scale KV cache: the slot pool, appends and in-place compaction, budgets moving between
// layers without copies, the planner's pool size equal to what the cache needs, and the accounting
// allocator measuring exactly the planned peak.
#include <gtest/gtest.h>

#include <limits>
#include <map>

#include "kvcache/multiscale_cache.h"
#include "kvcache/planner.h"
#include "runtime/check.h"
#include "test_util.h"

namespace skv {

namespace {

// Budgets given per (layer, scale); keeps the most recent tokens (a stand-in policy for the mechanics).
class TablePolicy final : public KVPolicy {
 public:
  std::map<std::pair<int, int>, int64_t> budgets;  // (layer, scale) -> tokens; absent: keep all
  std::map<std::pair<int, int>, int64_t> planned;  // when set: planned_budget differs (online-like)
  int unplanned_from = std::numeric_limits<int>::max();
  std::string name() const override { return "table"; }
  int first_unplanned_scale() const override { return unplanned_from; }
  int64_t budget(int l, int s, int64_t total) const override {
    auto it = budgets.find({l, s});
    return it == budgets.end() ? total : std::min(total, it->second);
  }
  int64_t planned_budget(int l, int s, int64_t total) const override {
    auto it = planned.find({l, s});
    return it == planned.end() ? budget(l, s, total) : std::min(total, it->second);
  }
  Tensor select(const CompressionInput& in, int64_t budget) override {
    const int64_t total = in.total(), RH = static_cast<int64_t>(in.rows) * in.heads;
    // every other old token first, then the newest ones: a non-contiguous, ascending selection
    int64_t m = budget / 2;
    while (m > 0 && 2 * (m - 1) >= total - (budget - m)) --m;
    std::vector<int32_t> kept;
    for (int64_t rh = 0; rh < RH; ++rh) {
      for (int64_t j = 0; j < m; ++j) kept.push_back(static_cast<int32_t>(2 * j));
      for (int64_t i = total - (budget - m); i < total; ++i) kept.push_back(static_cast<int32_t>(i));
    }
    return kept_on_backend(*in.backend, kept, in.rows, in.heads, budget);
  }
};

// Value of element d of token at absolute position p in (row, head) rh: unique and exact in float.
float tag(int64_t p, int64_t rh, int64_t d) { return static_cast<float>(p * 1000 + rh * 10 + d); }

void fill_scale(MultiScaleKVCache& c) {
  const int64_t RH = static_cast<int64_t>(c.rows()) * c.heads(), D = c.head_dim(), n = c.cur_len();
  for (int64_t rh = 0; rh < RH; ++rh)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t d = 0; d < D; ++d) {
        c.cur_k().f32()[(rh * n + i) * D + d] = tag(c.cur_offset() + i, rh, d);
        c.cur_v().f32()[(rh * n + i) * D + d] = -tag(c.cur_offset() + i, rh, d);
      }
}

// Every stored token's K and V (read through the layer's segments) match its recorded position.
void expect_store_consistent(const MultiScaleKVCache& c, int l) {
  const int64_t RH = static_cast<int64_t>(c.rows()) * c.heads(), D = c.head_dim(), len = c.len(l);
  const auto segs = c.store_segments(l);
  int64_t seen = 0;
  for (const auto& s : segs) seen += s.len;
  ASSERT_EQ(seen, len);
  for (int64_t rh = 0; rh < RH; ++rh) {
    int64_t j = 0;
    for (const auto& s : segs)
      for (int64_t i = 0; i < s.len; ++i, ++j) {
        const int64_t p = c.layer(l).pos[rh * len + j];
        const int64_t cap = s.k->dim(2);
        for (int64_t d = 0; d < D; ++d) {
          ASSERT_EQ(s.k->f32()[(rh * cap + s.start + i) * D + d], tag(p, rh, d)) << "layer " << l << " token " << j;
          ASSERT_EQ(s.v->f32()[(rh * cap + s.start + i) * D + d], -tag(p, rh, d));
        }
      }
  }
}

void run(MultiScaleKVCache& c, KVPolicy& pol, const Schedule& s, int depth) {
  for (int si = 0; si + 1 < s.num_scales(); ++si) {
    c.begin_scale(s.tokens(si), s.offset(si));
    fill_scale(c);
    for (int l = 0; l < depth; ++l) c.update(l, si, pol, s, nullptr, nullptr, 1.0f, 0);
    c.end_scale();
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
  const KVPlan plan = plan_kv(*full, s, 2, 1);
  EXPECT_EQ(plan.pool_tokens, 10);  // 5 tokens x 2 layers; the 3x3 scale is never stored
  EXPECT_EQ(plan.store_peak_tokens, 10);
  EXPECT_EQ(plan.transient_tokens, 9);
  EXPECT_EQ(plan.layer_max, (std::vector<int64_t>{5, 5}));
  MultiScaleKVCache c(cpu_backend(), 2, 1, 2, 2, plan.pool_tokens);
  c.track_positions(true);
  run(c, *full, s, 2);
  EXPECT_EQ(c.len(0), 5);
  EXPECT_EQ(c.layer(1).pos[4], 4);
  EXPECT_EQ(c.live_tokens(), 10);
  EXPECT_EQ(c.pool_pages(), 1);  // one page holds every slot of this small request
  EXPECT_EQ(c.free_tokens(), c.page_slots() - 10);
  EXPECT_LE(c.store_segments(0).size(), 2u);  // at most one extent per stored scale
  expect_store_consistent(c, 0);
  expect_store_consistent(c, 1);
}

TEST(MultiScaleKVCache, CompactionKeepsTheSelectedTokensInPlace) {
  Schedule s = Schedule::square({1, 2, 3, 4});
  TablePolicy pol;
  pol.budgets[{0, 2}] = 6;
  const KVPlan plan = plan_kv(pol, s, 1, 1);
  EXPECT_EQ(plan.pool_tokens, 6);
  MultiScaleKVCache c(cpu_backend(), 1, 2, 3, 1, plan.pool_tokens);
  c.track_positions(true);
  run(c, pol, s, 1);
  ASSERT_EQ(c.len(0), 6);
  // total 14 at scale 2: keep 0, 2, 4 (even old) and the newest 11, 12, 13
  for (int j = 0; j < 6; ++j) EXPECT_EQ(c.layer(0).pos[j], (std::vector<int>{0, 2, 4, 11, 12, 13})[j]);
  expect_store_consistent(c, 0);
}

TEST(MultiScaleKVCache, BudgetsMoveBetweenLayersWithoutCopiesAndThePlanIsExact) {
  // Layer 0 grows while layers 1 and 2 shrink at scale 3: slots freed by one layer are reused by
  // another, extents fragment, and the data still follows its positions.
  Schedule s = Schedule::square({1, 2, 3, 4, 5, 6});
  TablePolicy pol;
  for (int l = 0; l < 3; ++l) pol.budgets[{l, 2}] = 8;
  pol.budgets[{0, 3}] = 20;
  pol.budgets[{1, 3}] = 4;
  pol.budgets[{2, 3}] = 4;
  pol.budgets[{0, 4}] = 9;
  pol.budgets[{1, 4}] = 25;
  pol.budgets[{2, 4}] = 6;
  const KVPlan plan = plan_kv(pol, s, 3, 1);
  // after scale 2: 8+8+8 = 24; scale 3: layer 0 -> 20 (live 36) then 4, 4 -> 28; scale 4: 9 (17), 25 (38), 6 (40)
  EXPECT_EQ(plan.scales[3].live_peak, 36);
  EXPECT_EQ(plan.scales[3].store_tokens, 28);
  EXPECT_EQ(plan.scales[4].store_tokens, 40);
  EXPECT_EQ(plan.pool_tokens, 40);
  EXPECT_EQ(plan.store_peak_tokens, 40);
  MultiScaleKVCache c(cpu_backend(), 2, 2, 2, 3, plan.pool_tokens);
  c.track_positions(true);
  run(c, pol, s, 3);
  EXPECT_EQ(c.peak_live_tokens(), plan.pool_tokens);
  EXPECT_EQ(c.len(0), 9);
  EXPECT_EQ(c.len(1), 25);
  EXPECT_EQ(c.len(2), 6);
  EXPECT_GT(c.store_segments(1).size(), 1u);  // layer 1 grew into slots other layers gave back
  for (int l = 0; l < 3; ++l) expect_store_consistent(c, l);
  EXPECT_EQ(c.capped(), 0);
}

TEST(MultiScaleKVCache, MeasuredPeakIsThePlannedPeak) {
  Schedule s = Schedule::square({1, 2, 3, 4, 5});
  TablePolicy pol;
  pol.budgets[{0, 3}] = 12;
  pol.budgets[{1, 3}] = 5;
  const int rows = 2, heads = 3, hd = 4, depth = 2;
  const int64_t token_bytes = rows * heads * hd * 2 * 4;
  Allocator& a = cpu_backend().allocator();
  const int64_t before = a.stats().cur(MemCategory::KV);
  a.reset_peaks();
  KVPagePool pages(cpu_backend());
  const KVPlan plan = plan_kv(pol, s, depth, token_bytes, 3);  // 3 slots a page: the stores span many pages
  {
    MultiScaleKVCache c(cpu_backend(), rows, heads, hd, depth, plan.pool_tokens, &pages, 3);
    c.track_positions(true);
    run(c, pol, s, depth);
    c.begin_scale(s.tokens(4), s.offset(4));  // the last scale: transient only
    c.end_scale();
    EXPECT_EQ(c.pool_bytes(), plan.pool_bytes());
    EXPECT_EQ(c.pool_pages(), (plan.pool_tokens + 2) / 3);
    for (int l = 0; l < depth; ++l) expect_store_consistent(c, l);
  }
  EXPECT_EQ(a.stats().pk(MemCategory::KV) - before, plan.peak_bytes());
}

TEST(MultiScaleKVCache, BudgetsBeyondThePlanAreCutToThePool) {
  Schedule s = Schedule::square({1, 2, 3, 4});
  TablePolicy pol;
  for (int l = 0; l < 2; ++l) {
    pol.budgets[{l, 1}] = 4;
    pol.planned[{l, 1}] = 4;
    pol.planned[{l, 2}] = 4;
  }
  pol.budgets[{0, 2}] = 9;  // wants to grow, but the pool holds 8 and layer 1 still has its 4
  pol.budgets[{1, 2}] = 2;
  const KVPlan plan = plan_kv(pol, s, 2, 1);
  EXPECT_EQ(plan.pool_tokens, 8);
  MultiScaleKVCache c(cpu_backend(), 1, 1, 1, 2, plan.pool_tokens);
  c.track_positions(true);
  run(c, pol, s, 2);
  EXPECT_EQ(c.len(0), 4);  // cut to what was free
  EXPECT_EQ(c.len(1), 2);
  EXPECT_EQ(c.capped(), 1);
  EXPECT_LE(c.peak_live_tokens(), plan.pool_tokens);
}

// The pool grows with the request: at most once per scale, by whole pages to the plan's limit of that scale
// (the largest sum of the stores so far), so the cache holds, scale by scale, exactly what the admission
// ledger reserves for it, and the allocator's peak is the plan's peak. Its pages go back to the rank's pool
// when the request ends, and the pool frees them when trimmed.
TEST(MultiScaleKVCache, ThePoolGrowsScaleByScaleToThePlansLimits) {
  Schedule s = Schedule::square({1, 2, 3, 4});
  auto full = make_full_policy();
  const int rows = 2, heads = 1, hd = 2, depth = 2;
  const int64_t token_bytes = rows * heads * hd * 2 * 4;
  Allocator& a = cpu_backend().allocator();
  const int64_t before = a.stats().cur(MemCategory::KV);
  a.reset_peaks();
  KVPagePool pages(cpu_backend());
  const KVPlan plan = plan_kv(*full, s, depth, token_bytes, 4);  // 4 slots a page
  // stores after each scale: 2, 10, 28 (the 4x4 scale is never stored): 1, 3 and 7 pages
  EXPECT_EQ(plan.scale_limits(), (std::vector<int64_t>{2, 10, 28, 28}));
  EXPECT_EQ(plan.peak_bytes(), (28 + 16) * token_bytes);  // 7 pages of 4
  {
    MultiScaleKVCache c(cpu_backend(), rows, heads, hd, depth, plan.pool_tokens, &pages, 4);
    c.set_scale_limits(plan.scale_limits());
    c.track_positions(true);
    EXPECT_EQ(c.pool_slots(), 0);  // nothing until a store needs slots
    for (int si = 0; si + 1 < s.num_scales(); ++si) {
      c.begin_scale(s.tokens(si), s.offset(si));
      fill_scale(c);
      for (int l = 0; l < depth; ++l) c.update(l, si, *full, s, nullptr, nullptr, 1.0f, 0);
      c.end_scale();
      const int64_t n = (plan.scales[si].limit + 3) / 4;  // whole pages
      EXPECT_EQ(c.pool_slots(), 4 * n) << "scale " << si;
      EXPECT_EQ(c.pool_bytes(), n * 4 * token_bytes);
      EXPECT_EQ(c.pool_bytes(), plan.slot_bytes(plan.scales[si].limit));
      EXPECT_EQ(pages.used_pages(), n);
    }
    c.begin_scale(s.tokens(3), s.offset(3));  // the last scale: transient only
    c.end_scale();
    for (int l = 0; l < depth; ++l) {
      expect_store_consistent(c, l);
      for (const KVSegment& g : c.store_segments(l)) EXPECT_LE(g.start + g.len, 4);  // an extent stays in its page
    }
    EXPECT_EQ(c.peak_bytes(), plan.peak_bytes());
  }
  EXPECT_EQ(a.stats().pk(MemCategory::KV) - before, plan.peak_bytes());
  EXPECT_EQ(pages.used_pages(), 0);  // the request gave its 7 pages back ...
  EXPECT_EQ(pages.free_pages(), 7);
  pages.trim({}, 0);                 // ... and the pool frees them when trimmed
  EXPECT_EQ(a.stats().cur(MemCategory::KV), before);
}

// One pool for every request: pages a request gave back serve the next request of its shape, so the backend
// allocates nothing new; pages of another shape (more rows) are their own size. trim keeps, of each size, what
// it is told, and beyond that what fits the extra room.
TEST(KVPagePool, RequestsShareItsPagesBySize) {
  Schedule s = Schedule::square({1, 2, 3, 4});
  auto full = make_full_policy();
  const int heads = 2, hd = 4, depth = 2;
  const int64_t slot2 = 2 * heads * hd * 8, slot6 = 6 * heads * hd * 8;  // bytes of a slot of 2 and 6 rows
  KVPagePool pages(cpu_backend());
  std::vector<int64_t> allocated;
  for (int rows : {2, 2, 6}) {
    const KVPlan plan = plan_kv(*full, s, depth, rows * heads * hd * 8, 4);
    MultiScaleKVCache c(cpu_backend(), rows, heads, hd, depth, plan.pool_tokens, &pages, 4);
    c.set_scale_limits(plan.scale_limits());
    c.track_positions(true);
    run(c, *full, s, depth);
    for (int l = 0; l < depth; ++l) expect_store_consistent(c, l);
    EXPECT_EQ(c.pool_pages(), 7);  // 28 slots
    EXPECT_EQ(pages.used_pages(), 7);
    allocated.push_back(pages.allocated_pages());
  }
  EXPECT_EQ(allocated, (std::vector<int64_t>{7, 7, 14}));  // the second 2-row request took the first one's pages
  EXPECT_EQ(pages.used_pages(), 0);
  EXPECT_EQ(pages.free_pages(), 14);
  EXPECT_EQ(pages.peak_held_bytes(), 7 * 4 * slot2 + 7 * 4 * slot6);
  pages.trim({{4 * slot6, 2}}, 3 * 4 * slot2);  // 2 of the large pages, and 3 small ones in the extra room
  EXPECT_EQ(pages.free_pages(), 5);
  EXPECT_EQ(pages.free_bytes(), 2 * 4 * slot6 + 3 * 4 * slot2);
  KVPagePool::Page p = pages.acquire(4 * slot6);  // a cached page first
  EXPECT_EQ(pages.allocated_pages(), 14);
  pages.release(std::move(p));
  pages.trim({}, 0);
  EXPECT_EQ(pages.held_bytes(), 0);
  EXPECT_THROW(pages.acquire(6), Error);  // not a whole number of floats
}

// A budget decided during the request is held to the limit of its scale; a policy that says from which
// scale its budgets are unplanned gets the whole request's pool from there on instead.
TEST(MultiScaleKVCache, UnplannedBudgetsAreHeldToTheScaleLimitOrThePool) {
  Schedule s = Schedule::square({1, 2, 3, 4});
  TablePolicy pol;
  for (int l = 0; l < 2; ++l) {
    pol.planned[{l, 1}] = 2;  // the plan keeps 2 per layer at scale 1 ...
    pol.planned[{l, 2}] = 9;  // ... and 9 at scale 2: the pool is 18
  }
  pol.budgets[{0, 2}] = 9;
  pol.budgets[{1, 2}] = 9;  // the run keeps everything at scale 1 (5 per layer), which the plan did not foresee
  const KVPlan exact = plan_kv(pol, s, 2, 1);
  EXPECT_EQ(exact.pool_tokens, 18);
  EXPECT_EQ(exact.scale_limits(), (std::vector<int64_t>{2, 4, 18, 18}));
  MultiScaleKVCache c(cpu_backend(), 1, 1, 1, 2, exact.pool_tokens);
  c.set_scale_limits(exact.scale_limits());
  c.track_positions(true);
  run(c, pol, s, 2);
  EXPECT_EQ(c.len(0), 9);
  EXPECT_EQ(c.len(1), 9);
  EXPECT_GE(c.capped(), 1);  // scale 1 was cut to its limit
  pol.unplanned_from = 1;
  const KVPlan online = plan_kv(pol, s, 2, 1);
  EXPECT_EQ(online.scale_limits(), (std::vector<int64_t>{2, 18, 18, 18}));
  MultiScaleKVCache d(cpu_backend(), 1, 1, 1, 2, online.pool_tokens);
  d.set_scale_limits(online.scale_limits());
  d.track_positions(true);
  run(d, pol, s, 2);
  EXPECT_EQ(d.capped(), 0);
  for (int l = 0; l < 2; ++l) expect_store_consistent(d, l);
  EXPECT_THROW(d.set_scale_limits({3, 2}), Error);  // limits never decrease
  EXPECT_THROW(d.set_scale_limits({19}), Error);    // nor pass the pool
}

TEST(MultiScaleKVCache, RejectsBadSelections) {
  MultiScaleKVCache c(cpu_backend(), 1, 1, 1, 1, 5);
  c.track_positions(true);
  c.begin_scale(1, 0);
  c.append_current(0);
  c.end_scale();
  c.begin_scale(4, 1);
  EXPECT_THROW(c.compact(0, {3, 1}, 2), Error);     // not ascending
  EXPECT_THROW(c.compact(0, {0, 9}, 2), Error);     // out of range
  EXPECT_THROW(c.compact(0, {0, 1, 2}, 2), Error);  // wrong count
  c.append_current(0);
  EXPECT_THROW(c.append_current(0), Error);  // beyond the pool
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
