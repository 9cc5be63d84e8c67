// ScaleKV: Eq. 4 budgets on any schedule, drafter choice from z-scored ASI, budget tables (ours and the
// published format), online calibration on a real (random-weight) VAR model, and tensor parallelism:
// a split of the heads over two ranks (threads) reaches the same drafters on both ranks and keeps, head
// for head, exactly the tokens one rank keeps.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "kvcache/budget_table.h"
#include "kvcache/multiscale_cache.h"
#include "kvcache/planner.h"
#include "kvcache/scalekv.h"
#include "kvcache/scalekv_tp_harness.h"
#include "runtime/check.h"
#include "runtime/models/var_generate.h"
#include "test_util.h"
#include "kvcache/scalekv_tp_harness.h"
#include "thread_comm.h"
#include "models/var_test_util.h"

namespace skv {

namespace {

std::string source_dir() { return SKV_SOURCE_DIR; }

void expect_eq4(const std::vector<std::vector<int64_t>>& b, const std::vector<std::vector<uint8_t>>& d, int64_t B,
                int window) {
  for (size_t c = 0; c < b.size(); ++c) {
    int64_t sum = 0, nr = 0;
    for (size_t l = 0; l < b[c].size(); ++l) {
      sum += b[c][l];
      nr += !d[c][l];
      EXPECT_GE(b[c][l], window);
    }
    const int64_t L = static_cast<int64_t>(b[c].size());
    EXPECT_LE(sum, B * L) << "scale position " << c;
    EXPECT_GT(sum, B * L - std::max<int64_t>(nr, 1)) << "scale position " << c;  // integer rounding only
  }
}

}  // namespace

TEST(ScaleKVBudgets, Eq4HoldsOnEverySchedule) {
  std::mt19937 g(3);
  const std::vector<Schedule> schedules = {infinity_schedule(1.0, "1M"), infinity_schedule(1.0, "0.25M"),
                                           infinity_schedule(2.0, "1M"), infinity_schedule(0.333, "0.60M"),
                                           Schedule::square({1, 2, 3, 4, 5, 6, 8, 10, 13, 16})};
  for (const Schedule& s : schedules)
    for (int L : {4, 32, 40})
      for (double share : {0.04, 0.10, 0.20}) {
        ScaleKVOptions o;
        o.budget = std::max<int64_t>(16, static_cast<int64_t>(share * s.cached_before_last()));
        const int k0 = first_compressed_scale(s, o.budget);
        ASSERT_LT(k0, s.num_scales() - 1);
        EXPECT_GT(s.offset(k0 + 1), o.budget);
        EXPECT_LE(s.offset(k0), o.budget);
        const int K = s.num_scales() - 1 - k0;
        std::vector<std::vector<uint8_t>> d(K, std::vector<uint8_t>(L, 0));
        for (int c = 0; c < K; ++c)  // drafter sets that change from scale to scale, sometimes none
          for (int i = 0; i < (c == 1 ? 0 : default_drafters_per_scale(L)); ++i) d[c][g() % L] = 1;
        const auto b = scalekv_budgets(d, o.budget, k0, s, o);
        expect_eq4(b, d, o.budget, o.window);
        for (int c = 0; c < K; ++c)  // drafters never get more than they can hold (Limit)
          for (int l = 0; l < L; ++l)
            if (d[c][l]) EXPECT_LE(b[c][l], s.offset(k0 + c + 1));
      }
}

TEST(ScaleKVBudgets, FirstScalesFollowThePublishedTwoBTable) {
  // 2B, 1M, B = 650, drafters {0, 23}: the released Max/Min at the first three compressed scales are
  // 920/632, 1490/594, 2510/526; the generalisation gives the drafters everything up to Limit (921, 1497,
  // 2521) and the refiners what is left, within a few tokens of those.
  const Schedule s = infinity_schedule(1.0, "1M");
  ScaleKVOptions o;
  o.budget = 650;
  std::vector<std::vector<uint8_t>> d(5, std::vector<uint8_t>(32, 0));
  for (auto& x : d) x[0] = x[23] = 1;
  const auto b = scalekv_budgets(d, 650, 7, s, o);
  EXPECT_EQ(b[0][0], 921);
  EXPECT_NEAR(b[0][1], 632, 2);
  EXPECT_EQ(b[1][0], 1497);
  EXPECT_NEAR(b[1][1], 594, 2);
  EXPECT_EQ(b[2][0], 2521);
  EXPECT_NEAR(b[2][1], 526, 2);
  EXPECT_GE(b[4][5], static_cast<int64_t>(0.65 * 650) - 1);  // refiners end at refiner_last * B
}

TEST(ScaleKVBudgets, LowestZScoresOverallBecomeDrafters) {
  const Schedule s = Schedule::square({1, 2, 3, 4, 6, 8, 12});  // cached 130 before the last scale
  ScaleKVOptions o;
  o.budget = 20;  // k0 = 3 (cum 30 > 20): compressed scales 3, 4, 5
  o.drafters_total = 4;
  std::vector<std::vector<double>> asi = {{0.5, 0.1, 0.5, 0.5}, {0.3, 0.3, 0.3, 0.31}, {0.9, 0.2, 0.1, 0.9}};
  const BudgetTable t = make_budget_table(asi, 4, s, o);
  ASSERT_EQ(t.scales, (std::vector<int>{3, 4, 5}));
  // z per scale: scale 3 layer 1 = -1.73; scale 4 layers 0-2 = -0.58 each; scale 5 layer 2 = -1.15, layer 1 = -0.87
  EXPECT_EQ(t.drafter[0], (std::vector<uint8_t>{0, 1, 0, 0}));
  EXPECT_EQ(t.drafter[2], (std::vector<uint8_t>{0, 1, 1, 0}));
  EXPECT_EQ(t.drafter[1], (std::vector<uint8_t>{1, 0, 0, 0}));  // ties broken by order: (4, 0) before (4, 1)
  EXPECT_EQ(zscores({1, 1, 1}), (std::vector<double>{0, 0, 0}));
  expect_eq4(t.budgets, t.drafter, 20, 16);
}

TEST(ScaleKVBudgetTable, PublishedTablesReadAndCheck) {
  const Schedule s = infinity_schedule(1.0, "1M");
  for (auto [file, depth] : {std::pair{"2b_10%_budget.json", 32}, std::pair{"8b_10%_budget.json", 40}}) {
    const std::string path = source_dir() + "/../shared/reference/" + file;
    if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " is absent";
    const BudgetTable t = read_budget_table(path, depth, s);
    EXPECT_EQ(t.base_capacity, 650);  // N_d Max + N_r Min = 650 L
    EXPECT_EQ(t.scales, (std::vector<int>{7, 8, 9, 10, 11}));
    for (size_t c = 0; c < t.scales.size(); ++c) {
      int64_t sum = 0;
      for (int64_t v : t.budgets[c]) sum += v;
      EXPECT_EQ(sum, 650 * depth);
    }
    EXPECT_EQ(t.capacity(0, 12), t.capacity(0, 11));  // the last scale reuses the last entry
    EXPECT_EQ(t.capacity(0, 6), -1);
    try {  // another depth
      read_budget_table(path, depth - 1, s);
      FAIL();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("another depth"), std::string::npos) << e.what();
    }
    try {  // another schedule: 512x512 compresses other scales
      read_budget_table(path, depth, infinity_schedule(1.0, "0.25M"));
      FAIL();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("another schedule"), std::string::npos) << e.what();
    }
  }
  const std::string path = source_dir() + "/../shared/reference/2b_10%_budget.json";
  if (!std::filesystem::exists(path)) return;
  const BudgetTable t = read_budget_table(path, 32, s);
  EXPECT_EQ(t.budgets[0][0], 920);
  EXPECT_EQ(t.budgets[0][23], 920);
  EXPECT_EQ(t.budgets[0][1], 632);
  EXPECT_EQ(t.budgets[4][23], 465);
  EXPECT_EQ(t.drafter_count(4), 1);
}

TEST(ScaleKVBudgetTable, OursRoundTripsAndBadTablesAreNamed) {
  const Schedule s = Schedule::square({1, 2, 3, 4, 6, 8, 12});
  ScaleKVOptions o;
  o.budget = 20;
  const BudgetTable t = make_budget_table({{1, 2, 3, 4}, {4, 3, 2, 1}, {1, 1, 2, 2}}, 4, s, o);
  const std::string path = (std::filesystem::temp_directory_path() / "skv_budgets_test.json").string();
  write_budget_table(path, t, "test-model");
  const BudgetTable r = read_budget_table(path, 4, s);
  EXPECT_EQ(r.budgets, t.budgets);
  EXPECT_EQ(r.drafter, t.drafter);
  EXPECT_EQ(r.base_capacity, 20);
  EXPECT_EQ(r.asi.size(), 3u);
  EXPECT_THROW(read_budget_table(path, 5, s), Error);                                 // depth
  EXPECT_THROW(read_budget_table(path, 4, Schedule::square({1, 2, 3, 4, 6, 8})), Error);  // schedule
  std::filesystem::remove(path);
  auto err = [&](const std::string& text) {
    try {
      parse_budget_table(text, "t.json", 2, s);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(err("{").find("not valid JSON"), std::string::npos);
  EXPECT_NE(err(R"({"Scale 5": {"Block 0": 1, "Block 1": 2, "Max": 30, "Min": 20}})").find("expected 0 (refiner) or 1"),
            std::string::npos);
  EXPECT_NE(err(R"({"Scale 5": {"Block 0": 1, "Block 1": 0, "Max": 30, "Min": 10}})").find("below the observation"),
            std::string::npos);
  EXPECT_NE(err(R"({"foo": 1})").find("unexpected entry 'foo'"), std::string::npos);
  EXPECT_NE(err(R"({"format": "x"})").find("unknown format"), std::string::npos);
}

TEST(ScaleKVPolicy, TableBudgetsAndThePlan) {
  const Schedule s = infinity_schedule(1.0, "1M");
  const std::string path = source_dir() + "/../shared/reference/2b_10%_budget.json";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " is absent";
  ScaleKVOptions o;
  o.calibration = ScaleKVCalibration::Table;
  o.table = std::make_shared<BudgetTable>(read_budget_table(path, 32, s));
  ScaleKVPolicy p(o, 32, s);
  EXPECT_EQ(p.first_compressed_scale(), 7);
  EXPECT_EQ(p.budget(5, 6, 521), 521);   // before k0 nothing is compressed
  EXPECT_EQ(p.budget(0, 7, 921), 920);   // drafter
  EXPECT_EQ(p.budget(1, 7, 921), 632);   // refiner
  EXPECT_EQ(p.budget(1, 8, 632 + 576), 594);
  EXPECT_EQ(p.budget(23, 11, 4100 + 2304), 465);  // a drafter turned refiner
  EXPECT_EQ(p.budget(0, 12, 99999), 99999);       // the last scale is never stored
  EXPECT_EQ(p.planned_budget(0, 7, 921), 920);
  const KVPlan plan = plan_kv(p, s, 32, 1);
  EXPECT_EQ(plan.store_peak_tokens, 650 * 32);
  EXPECT_GT(plan.pool_tokens, plan.store_peak_tokens);  // drafters grow before refiners shrink within a scale
}

namespace {

// The tiny test VAR with 16-channel heads: `heads` of them.
VarConfig small_var(int depth, int heads, std::vector<int> pn) {
  VarConfig c = test::tiny_var_config("small", depth, std::move(pn), 1);
  c.embed_dim = 16 * heads;
  c.num_heads = heads;
  return c;
}

}  // namespace

TEST(ScaleKVPolicy, OnlineCalibrationOnAModelStaysInsideThePlan) {
  const VarConfig cfg = small_var(6, 2, {1, 2, 3, 4, 6, 8, 12});
  auto comm = make_local_communicator();
  VarModel model(cfg, WeightLoader(7, cpu_backend()), *comm);
  VQVAE vae(cfg, WeightLoader(8, cpu_backend()));
  ScaleKVOptions o;
  o.budget = 24;  // cached before the last scale: 130 -> k0 = 3 (30 > 24)
  o.drafters_per_scale = 2;
  ScaleKVPolicy p(o, cfg.depth, cfg.schedule());
  VarRequest req;
  req.labels = {1, 3};
  VarRunOptions opt;
  opt.policy = &p;
  opt.decode = false;
  const GenerateResult r = var_generate(model, vae, req, opt);
  EXPECT_EQ(p.first_compressed_scale(), 3);
  ASSERT_EQ(p.drafters().size(), 2u);
  // the drafters are the layers with the lowest ASI at k0
  const auto z = zscores(p.online_asi());
  for (int l = 0; l < cfg.depth; ++l)
    if (std::find(p.drafters().begin(), p.drafters().end(), l) == p.drafters().end())
      for (int d : p.drafters()) EXPECT_LE(z[d], z[l]);
  for (int l = 0; l < cfg.depth; ++l) EXPECT_EQ(p.layer_budget(l, 3), 24);  // k0 runs with the uniform budget
  int64_t sum = 0;
  for (int l = 0; l < cfg.depth; ++l) sum += p.layer_budget(l, 5);
  EXPECT_LE(sum, 24 * cfg.depth);
  EXPECT_GT(p.layer_budget(p.drafters()[0], 5), p.layer_budget(p.drafters()[0] == 0 ? 1 : 0, 5) - 1);
  EXPECT_EQ(r.kv_peak_bytes, r.kv_planned_peak_bytes);  // the cache never leaves the plan
  // a second request starts fresh
  p.begin_request();
  EXPECT_TRUE(p.drafters().empty());
}


TEST(ScaleKVTensorParallel, TwoRanksReachTheSameDraftersAndKeepTheSameTokensPerHead) {
  const Schedule s = Schedule::square({1, 2, 3, 4, 6, 8, 10});
  const int depth = 5, R = 2, H = 4, hd = 8;
  const auto data = test::make_layer_data(s, depth, R, H, hd);
  for (const ScaleKVScoring scoring : {ScaleKVScoring::Reference, ScaleKVScoring::Paper}) {
    ScaleKVOptions o;
    o.budget = 20;  // cumulative 1, 5, 14, 30: compression from scale 3 on
    o.window = 16;
    o.drafters_per_scale = 2;
    o.scoring = scoring;
    auto local = make_local_communicator();
    ScaleKVPolicy one(o, depth, s);
    const auto kept1 = test::run_heads(data, s, depth, R, 0, H, hd, one, *local);
    ASSERT_EQ(one.drafters().size(), 2u);
    test::ThreadGroup g(2);
    std::vector<std::map<std::tuple<int, int, int, int>, std::vector<int32_t>>> kept2(2);
    std::vector<std::vector<int>> drafters(2);
    std::vector<std::vector<int64_t>> budgets(2);
    g.run([&](int rank, Communicator& comm) {
      ScaleKVPolicy p(o, depth, s);
      kept2[rank] = test::run_heads(data, s, depth, R, rank * H / 2, (rank + 1) * H / 2, hd, p, comm);
      drafters[rank] = p.drafters();
      for (int si = 0; si < s.num_scales(); ++si)
        for (int l = 0; l < depth; ++l) budgets[rank].push_back(p.layer_budget(l, si));
    });
    EXPECT_EQ(drafters[0], drafters[1]);
    EXPECT_EQ(budgets[0], budgets[1]);
    EXPECT_EQ(drafters[0], one.drafters());
    // the two halves together are the one-rank selection, head for head
    std::map<std::tuple<int, int, int, int>, std::vector<int32_t>> both(kept2[0]);
    both.insert(kept2[1].begin(), kept2[1].end());
    ASSERT_EQ(both.size(), kept1.size());
    EXPECT_TRUE(both == kept1);
  }
}

TEST(ScaleKVPolicy, BadOptionsAreNamed) {
  const Schedule s = Schedule::square({1, 2, 3, 4, 6, 8});
  ScaleKVOptions o;
  o.budget = 8;
  try {
    ScaleKVPolicy p(o, 4, s);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("below the observation window of 16 tokens"), std::string::npos) << e.what();
  }
  o.budget = 20;
  o.drafters_per_scale = 4;
  EXPECT_THROW(ScaleKVPolicy(o, 4, s), Error);
}

}  // namespace skv
