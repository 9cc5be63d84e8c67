// The admission ledger and FCFS queue (engine/admission.h): exact reservations, no overtaking, cancel
// and finish returning memory at once, and - on real memory plans - a replay of a burst of requests in
// which the reserved KV never passes the cap, nothing is preempted, and ScaleKV admits more at once; and
// staggered arrivals sharing a cap through curves that rise with the scales.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "engine/admission.h"
#include "engine/request_memory.h"
#include "kvcache/page_pool.h"
#include "kvcache/policy_factory.h"
#include "kvcache/scalekv.h"
#include "runtime/check.h"

namespace skv {

namespace {

std::vector<StepDemand> curve(std::vector<int64_t> bytes, int64_t tokens = 1) {
  std::vector<StepDemand> d;
  for (int64_t b : bytes) d.push_back({b, tokens});
  return d;
}

}  // namespace

TEST(Admission, ReservesEveryFutureIterationAndAdmitsOnlyWhatFits) {
  AdmissionLedger l({100, 0});
  EXPECT_TRUE(l.fits(curve({10, 30, 60})));
  l.admit(1, curve({10, 30, 60}));
  EXPECT_EQ(l.reserved(2).kv_bytes, 60);
  // a second request aligned to start now: 10+50, 30+50, 60+50 > 100 at iteration 2
  EXPECT_FALSE(l.fits(curve({50, 50, 50})));
  EXPECT_TRUE(l.fits(curve({50, 50, 40})));
  EXPECT_TRUE(l.fits(curve({90, 70})));  // shorter than the one in flight: only its own iterations count
  l.advance();                           // request 1 is at its second step now
  EXPECT_EQ(l.reserved(0).kv_bytes, 30);
  EXPECT_TRUE(l.fits(curve({70, 40})));
  EXPECT_FALSE(l.fits(curve({70, 41})));
  EXPECT_EQ(l.advance(), std::vector<int64_t>{});
  EXPECT_EQ(l.advance(), std::vector<int64_t>{1});  // its last step ran: it leaves, its memory with it
  EXPECT_TRUE(l.empty());
  EXPECT_EQ(l.horizon(), 0);
}

// What the page pool may keep cached for the next iteration: the pages each request in flight grows by into
// its next step (from its curve), never the pages it already holds.
TEST(Admission, TheNextIterationsPageGrowthComesFromTheCurves) {
  auto paged = [](std::vector<int64_t> pages) {
    std::vector<StepDemand> d;
    for (int64_t p : pages) {
      StepDemand x;
      x.kv_bytes = 10 * p + 1;
      x.step_tokens = 1;
      x.kv_pages = p;
      x.kv_page_bytes = 10;
      d.push_back(x);
    }
    return d;
  };
  AdmissionLedger l({1000, 0});
  l.admit(1, paged({1, 3, 3, 7}));
  using Growth = std::map<int64_t, int64_t>;  // page bytes -> pages
  EXPECT_EQ(l.next_page_growth(), (Growth{{10, 1}}));  // its first step takes its first page
  l.advance();
  l.admit(2, paged({2, 2}));
  EXPECT_EQ(l.next_page_growth(), (Growth{{10, 2 + 2}}));  // 1 grows from 1 to 3 pages, 2 starts with 2
  l.advance();
  EXPECT_EQ(l.next_page_growth(), Growth{});               // 1 keeps its 3, 2 its 2
  l.advance();
  EXPECT_EQ(l.next_page_growth(), (Growth{{10, 4}}));      // 1 grows to 7 (2 has left)
}

TEST(Admission, TheStepTokenBoundIsASecondLimit) {
  AdmissionLedger l({1000, 10});
  l.admit(1, curve({1, 1}, 6));
  EXPECT_FALSE(l.fits(curve({1}, 5)));
  EXPECT_TRUE(l.fits(curve({1}, 4)));
  EXPECT_FALSE(l.never_fits(curve({1}, 11)).empty());
  EXPECT_NE(l.never_fits(curve({1001})).find("more than the whole KV memory"), std::string::npos);
}

TEST(Admission, UnderAMemoryCapKVOtherBytesAndTheLargestDecodeCount) {
  AdmissionLimits lim;
  lim.kv_cap_bytes = 1000;
  lim.memory_cap_bytes = 180;
  AdmissionLedger l(lim);
  // {kv, tokens, other, decode}: a request holding 40 KV and 20 other bytes, decoding 60 after its last step.
  l.admit(1, {{40, 1, 20, 0}, {40, 1, 20, 60}});
  EXPECT_EQ(l.reserved_memory(1), 40 + 20 + 60);
  // Two decodes in one iteration run one after another: the largest counts, not the sum
  // (80 KV + 40 other + max(60, 50) = 180 fits; with 60 + 50 it would not).
  EXPECT_TRUE(l.fits({{40, 1, 20, 0}, {40, 1, 20, 50}}));
  EXPECT_FALSE(l.fits({{40, 1, 20, 0}, {40, 1, 21, 50}}));  // other bytes add up
  EXPECT_FALSE(l.fits({{40, 1, 20, 0}, {40, 1, 20, 61}}));  // a larger decode raises the iteration's
  l.admit(2, {{40, 1, 20, 0}, {40, 1, 20, 50}});
  EXPECT_EQ(l.reserved(1).decode_bytes, 60);
  EXPECT_EQ(l.reserved_memory(1), 180);
  l.cancel(1);  // the largest decode leaves with its request
  EXPECT_EQ(l.reserved(1).decode_bytes, 50);
  EXPECT_EQ(l.reserved_memory(1), 110);
  // What could never fit names --device-memory and the three parts.
  const std::string why = l.never_fits({{100, 1, 60, 21}});
  EXPECT_NE(why.find("--device-memory"), std::string::npos) << why;
  EXPECT_NE(why.find("21 of decoding"), std::string::npos) << why;
  EXPECT_TRUE(l.never_fits({{100, 1, 60, 20}}).empty());
  // Without a memory cap the other bytes and decodes are not limits.
  AdmissionLedger k({100, 0});
  EXPECT_TRUE(k.fits({{100, 1, int64_t{1} << 40, int64_t{1} << 40}}));
}

TEST(RequestMemory, StateStepTokensAndFirstStepAddUp) {
  std::vector<StepDemand> d{{10, 2}, {10, 8}, {10, 32}};
  RequestMemory m;
  m.state_bytes = 100;
  m.step_bytes = 7;
  m.bytes_per_row_token = 3;
  m.first_step_bytes = 1000;
  add_request_memory(d, m);
  EXPECT_EQ(d[0].other_bytes, 100 + 7 + 3 * 2 + 1000);
  EXPECT_EQ(d[1].other_bytes, 100 + 7 + 3 * 8);
  EXPECT_EQ(d[2].other_bytes, 100 + 7 + 3 * 32);
  EXPECT_EQ(d[2].kv_bytes, 10);  // the KV part is untouched
  m.bytes_per_row_token = int64_t{1} << 62;
  EXPECT_THROW(add_request_memory(d, m), Error);  // an overflow is an error, never a wrapped figure
}

TEST(RequestMemory, DecodeScalesWithImagesAndLargerImagesNeverBelowOneProbe) {
  const DecodeProbe p{1000, 256};
  EXPECT_EQ(decode_bytes(p, 1, 256), 1000);
  EXPECT_EQ(decode_bytes(p, 3, 256), 3000);
  EXPECT_EQ(decode_bytes(p, 1, 64), 1000);  // a smaller image: one probe (the decoder's fixed part)
  EXPECT_GE(decode_bytes(p, 1, 1024), 4000);  // four times the cells: at least four times the bytes
  EXPECT_LE(decode_bytes(p, 1, 1024), 4000 + 1024);
  EXPECT_EQ(decode_bytes(p, 0, 256), 0);
  EXPECT_EQ(decode_bytes(DecodeProbe{}, 2, 256), 0);  // not measured (no --device-memory): nothing charged
}

TEST(Admission, CancelReturnsTheRemainingStepsAtOnce) {
  AdmissionLedger l({100, 0});
  l.admit(7, curve({40, 40, 40, 40}));
  l.admit(8, curve({50, 50}));
  l.advance();
  EXPECT_FALSE(l.fits(curve({70})));
  l.cancel(7);
  EXPECT_EQ(l.reserved(0).kv_bytes, 50);
  EXPECT_EQ(l.horizon(), 1);
  EXPECT_TRUE(l.fits(curve({50, 100, 100})));
  EXPECT_THROW(l.cancel(7), Error);
}

TEST(Admission, FcfsNeverLetsASmallRequestOvertakeTheHead) {
  FcfsAdmission q({100, 0});
  q.submit(1, curve({80, 80}));
  q.submit(2, curve({60}));
  q.submit(3, curve({10}));
  EXPECT_EQ(q.admit_ready(), std::vector<int64_t>{1});  // 2 does not fit next to 1; 3 would, but waits behind 2
  EXPECT_EQ(q.waiting(), 2);
  q.advance();
  EXPECT_EQ(q.admit_ready(), std::vector<int64_t>{});
  EXPECT_EQ(q.advance(), std::vector<int64_t>{1});
  EXPECT_EQ(q.admit_ready(), (std::vector<int64_t>{2, 3}));
  q.cancel(3);  // in flight: its memory comes back
  EXPECT_EQ(q.ledger().reserved(0).kv_bytes, 60);
  EXPECT_THROW(q.submit(4, curve({101})), Error);  // could never run: refused at once, naming the limit
}

// The VAR-d16 shape at 256x256 (10 scales, 680 tokens, 16 layers of 16 heads x 64, CFG: 2 rows, F32 K+V):
// the memory plans of the full cache and of ScaleKV 10 % as the engine makes them (the policy factory: online
// calibration, planned with its uniform budget of 10 % of the 424 tokens cached before the last scale, 43)
// drive bursts of 200 requests through caps of whole and half full-cache requests. burst_concurrency checks
// every iteration's reservation against the cap and that no request is held back once admitted.
TEST(Admission, ABurstOf200RequestsOnRealPlansStaysUnderTheCap) {
  const Schedule s = Schedule::square({1, 2, 3, 4, 5, 6, 8, 10, 13, 16});
  const int depth = 16, rows = 2;
  const int64_t token_bytes = rows * 16 * 64 * 2 * 4;
  KVOptions o;
  o.policy = "scalekv";
  o.budget = "10%";
  const auto scalekv = make_kv_policy(o, KVModelInfo{depth, 16, s});
  const auto full = make_full_policy();
  const auto d_full = request_demand(plan_kv(*full, s, depth, token_bytes, kKVPageSlots), rows);
  const auto d_skv = request_demand(plan_kv(*scalekv, s, depth, token_bytes, kKVPageSlots), rows);
  ASSERT_EQ(d_full.size(), 10u);
  const int64_t peak_full = d_full.back().kv_bytes, peak_skv = d_skv.back().kv_bytes;
  EXPECT_EQ(peak_full, 110 * (int64_t{1} << 20));  // `scalekv plan --model configs/var-d16.json`
  EXPECT_EQ(peak_skv, 15 * (int64_t{1} << 20));    // the same with --kv-policy scalekv
  std::printf("cap (full-cache requests) | full | ScaleKV 10%% | ratio\n");
  for (const int halves : {2, 3, 4, 5, 8, 9, 16}) {
    const int64_t cap = halves * peak_full / 2;
    const int64_t most_full = burst_concurrency(d_full, {cap, 0}, 200), most_skv = burst_concurrency(d_skv, {cap, 0}, 200);
    std::printf("%.1f | %lld | %lld | %.1fx\n", halves / 2.0, static_cast<long long>(most_full),
                static_cast<long long>(most_skv), static_cast<double>(most_skv) / static_cast<double>(most_full));
    // Deterministic (plans, not timings). At a cap of whole full-cache requests nothing staggers in beside
    // them (a request one iteration later would reach its last scales while they hold theirs); half a request
    // more lets the full cache start requests whose early scales fit beside the others' peaks.
    EXPECT_LE(most_skv, cap / d_skv.front().kv_bytes);
    EXPECT_GE(most_skv, cap / peak_skv) << halves;  // those admitted together at their peak fit
    if (halves % 2 == 0) {
      EXPECT_EQ(most_full, halves / 2);
      // The bar on this shape: at least 5x at one cap (the paper's memory claim as concurrency).
      EXPECT_GE(most_skv, 5 * most_full) << halves;
    }
  }
}

// Rising curves: a request's cache grows its pool scale by scale (its plan's limit of each scale), so the
// ledger reserves for step k only what the request holds by then. Requests arriving one iteration apart
// then share a cap that flat curves (the pool reserved from the first step, as before the pool grew) would
// fill with 4 of them: the full cache's last scales come after the earlier requests have left.
TEST(Admission, RisingCurvesLetStaggeredRequestsShareTheCap) {
  const Schedule s = Schedule::square({1, 2, 3, 4, 5, 6, 8, 10, 13, 16});
  const int depth = 16, rows = 2;
  const int64_t token_bytes = rows * 16 * 64 * 2 * 4;
  const auto full = make_full_policy();
  const KVPlan plan = plan_kv(*full, s, depth, token_bytes, kKVPageSlots);
  const std::vector<StepDemand> rising = request_demand(plan, rows);
  std::vector<StepDemand> flat = rising;
  for (size_t k = 0; k < flat.size(); ++k)
    flat[k].kv_bytes = (plan.pool_tokens + plan.scales[k].tokens) * token_bytes;
  for (size_t k = 0; k + 1 < rising.size(); ++k) EXPECT_LE(rising[k].kv_bytes, rising[k + 1].kv_bytes) << "step " << k;
  for (size_t k = 0; k + 2 < rising.size(); ++k) EXPECT_LT(rising[k].kv_bytes, flat[k].kv_bytes) << "step " << k;
  // The last two steps hold the whole store either way (the last stored scale reaches the pool).
  EXPECT_EQ(rising[8].kv_bytes, flat[8].kv_bytes);
  EXPECT_EQ(rising.back().kv_bytes, flat.back().kv_bytes);
  EXPECT_EQ(plan.peak_bytes(), rising.back().kv_bytes);
  const int64_t cap = 4 * rising.back().kv_bytes;
  // One arrival per iteration, 60 requests: the most in flight, with the reserved KV checked every iteration.
  auto staggered = [&](const std::vector<StepDemand>& d) {
    FcfsAdmission q({cap, 0});
    int64_t most = 0, finished = 0, submitted = 0;
    for (int64_t it = 0; finished < 60 && it < 10000; ++it) {
      if (submitted < 60) q.submit(submitted++, d);
      q.admit_ready();
      most = std::max(most, q.ledger().in_flight());
      EXPECT_LE(q.ledger().reserved(0).kv_bytes, cap) << "iteration " << it;
      finished += static_cast<int64_t>(q.advance().size());
    }
    EXPECT_EQ(finished, 60);
    return most;
  };
  const int64_t most_flat = staggered(flat), most_rising = staggered(rising);
  std::printf("one arrival per iteration under a cap of 4 whole requests: %lld in flight with flat curves, %lld rising\n",
              static_cast<long long>(most_flat), static_cast<long long>(most_rising));
  EXPECT_EQ(most_flat, 4);
  EXPECT_EQ(most_rising, 10);  // deterministic (plans, not timings)
}

}  // namespace skv
