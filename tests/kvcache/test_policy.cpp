// The baseline policies: what sliding-window, StreamingLLM, SnapKV and PyramidKV keep, their budgets,
// and every policy end to end on a small VAR model, where the measured KV peak equals the plan and the
// compressed cache is much smaller than the full one.
#include <gtest/gtest.h>

#include <numeric>

#include "kvcache/multiscale_cache.h"
#include "kvcache/planner.h"
#include "kvcache/scalekv.h"
#include "runtime/check.h"
#include "runtime/models/var_generate.h"
#include "test_util.h"
#include "models/var_test_util.h"

namespace skv {

namespace {

// Runs a policy over random K/V/q through the cache (depth 2, 2 rows, 2 heads); returns layer 0's positions.
std::vector<int32_t> drive(KVPolicy& pol, const Schedule& s, int64_t* pool = nullptr) {
  const int depth = 2, R = 2, H = 2, hd = 4;
  const KVPlan plan = plan_kv(pol, s, depth, 1);
  if (pool) *pool = plan.pool_tokens;
  MultiScaleKVCache c(cpu_backend(), R, H, hd, depth, plan.pool_tokens);
  c.track_positions(true);
  uint32_t seed = 1;
  for (int si = 0; si + 1 < s.num_scales(); ++si) {
    c.begin_scale(s.tokens(si), s.offset(si));
    for (int l = 0; l < depth; ++l) {
      Tensor k = test::randn({R, H, s.tokens(si), hd}, seed++), q = test::randn({R, H, s.tokens(si), hd}, seed++);
      std::copy_n(k.f32(), k.numel(), c.cur_k().f32());
      std::copy_n(k.f32(), k.numel(), c.cur_v().f32());
      c.update(l, si, pol, s, &q, &q, 0.5f, 0);
    }
    c.end_scale();
  }
  return c.layer(0).pos;
}

}  // namespace

TEST(Policies, SlidingWindowAndStreamingLLMKeepRecentAndSinks) {
  const Schedule s = Schedule::square({1, 2, 3, 4, 5});  // 30 cached before the last scale
  auto sw = make_sliding_window_policy(10);
  int64_t pool = 0;
  auto pos = drive(*sw, s, &pool);
  EXPECT_EQ(pool, 20);
  ASSERT_EQ(pos.size(), 4u * 10);
  for (int j = 0; j < 10; ++j) EXPECT_EQ(pos[j], 20 + j);  // the 10 most recent of 30
  auto st = make_streamingllm_policy(10, 4);
  pos = drive(*st, s);
  EXPECT_EQ(std::vector<int32_t>(pos.begin(), pos.begin() + 10), (std::vector<int32_t>{0, 1, 2, 3, 24, 25, 26, 27, 28, 29}));
  EXPECT_THROW(make_streamingllm_policy(4, 4), Error);
}

TEST(Policies, SnapKVKeepsItsWindowAndAUniformBudget) {
  const Schedule s = Schedule::square({1, 2, 3, 4, 6, 8});
  auto p = make_snapkv_policy(20, 2, 4);
  EXPECT_TRUE(p->queries().attention);
  int64_t pool = 0;
  auto pos = drive(*p, s, &pool);
  EXPECT_EQ(pool, 40);
  ASSERT_EQ(pos.size(), 4u * 20);
  // the last 4 tokens of the last stored map (6x6 at offset 30) are always kept
  for (int rh = 0; rh < 4; ++rh)
    for (int j = 0; j < 4; ++j) EXPECT_EQ(pos[rh * 20 + 16 + j], 62 + j);
  try {
    make_snapkv_policy(10, 2, 16);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("below the observation window of 16"), std::string::npos) << e.what();
  }
}

TEST(Policies, PyramidBudgetsFallWithDepthAndSumToTheUniformBudget) {
  for (int depth : {2, 5, 16, 32})
    for (int64_t B : {40, 150, 650}) {
      const auto b = pyramid_budgets(B, depth, 16, 20.0);
      EXPECT_EQ(std::accumulate(b.begin(), b.end(), int64_t{0}), B * depth);
      for (int l = 1; l < depth; ++l) EXPECT_LE(b[l], b[l - 1] + 1);
      for (int64_t x : b) EXPECT_GE(x, 16);
    }
  const auto b = pyramid_budgets(650, 32, 16, 20.0);
  EXPECT_GT(b.front(), 1200);  // ~2B - B/20
  EXPECT_LT(b.back(), 40);     // ~B/20
}

TEST(Policies, EveryPolicyRunsAVarModelWithinItsPlan) {
  const VarConfig c = test::tiny_var_config("small", 4, {1, 2, 3, 4, 6, 8, 10}, 1);
  auto comm = make_local_communicator();
  VarModel model(c, WeightLoader(5, cpu_backend()), *comm);
  VQVAE vae(c, WeightLoader(6, cpu_backend()));
  VarRequest req;
  req.labels = {2, 4};
  const int64_t B = 20;  // of 130 cached tokens
  std::vector<std::unique_ptr<KVPolicy>> ps;
  ps.push_back(make_full_policy());
  ps.push_back(make_sliding_window_policy(B));
  ps.push_back(make_streamingllm_policy(B));
  ps.push_back(make_snapkv_policy(B, c.depth));
  ps.push_back(make_pyramidkv_policy(B, c.depth));
  ScaleKVOptions so;
  so.budget = B;
  ps.push_back(std::make_unique<ScaleKVPolicy>(so, c.depth, c.schedule()));
  so.scoring = ScaleKVScoring::Paper;
  ps.push_back(std::make_unique<ScaleKVPolicy>(so, c.depth, c.schedule()));
  int64_t full_peak = 0;
  for (auto& p : ps) {
    VarRunOptions opt;
    opt.policy = p.get();
    const GenerateResult r = var_generate(model, vae, req, opt);
    EXPECT_EQ(r.kv_peak_bytes, r.kv_planned_peak_bytes) << p->name();
    EXPECT_EQ(r.images.dim(0), 2) << p->name();
    // A slot: 4 rows x 4 heads x 16 x (K + V) x 4 bytes; the stores take whole pages of 64 slots, the 10x10
    // transient its own 100.
    const int64_t slot = 4 * 4 * 16 * 2 * 4;
    if (p->name() == "full") {
      full_peak = r.kv_peak_bytes;
      // full: 130 tokens x 4 layers (520 slots: 9 pages) + the 10x10 transient
      EXPECT_EQ(full_peak, (9 * 64 + 100) * slot);
    } else {
      EXPECT_EQ(r.kv_peak_bytes, (2 * 64 + 100) * slot) << p->name();  // B x 4 layers = 80 slots: 2 pages
    }
  }
}

}  // namespace skv
