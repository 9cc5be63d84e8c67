// The KV benchmarks on a tiny random VAR model: the memory rows match the plan and the full run, a
// budget that keeps everything reproduces the full run exactly, and compression shows up as lower
// agreement and memory.
#include <gtest/gtest.h>

#include "launcher/bench_fidelity.h"
#include "launcher/bench_kv_memory.h"
#include "runtime/check.h"
#include "models/var_test_util.h"

namespace skv {

namespace {

struct Tiny {
  VarConfig cfg;
  std::unique_ptr<Communicator> comm = make_local_communicator();
  std::unique_ptr<VarModel> model;
  std::unique_ptr<VQVAE> vae;
  KVBenchModel m;
  Tiny() {
    cfg = test::tiny_var_config("tiny", 4, {1, 2, 3, 4, 6, 8}, 3);
    model = std::make_unique<VarModel>(cfg, WeightLoader(2, cpu_backend()), *comm);
    vae = std::make_unique<VQVAE>(cfg, WeightLoader(3, cpu_backend()));
    m.info = {cfg.depth, cfg.num_heads, cfg.schedule()};
    m.description = "tiny";
    m.run = [this](KVPolicy& p, uint64_t seed, bool decode) {
      VarRequest req;
      req.labels = {1, 2};
      req.seed = seed;
      req.sampling.top_k = 3;
      VarRunOptions opt;
      opt.policy = &p;
      opt.decode = decode;
      return var_generate(*model, *vae, req, opt);
    };
  }
};

}  // namespace

TEST(KVBench, MemoryRowsFollowThePlanAndTheFullRun) {
  Tiny t;
  const auto rows = measure_kv_memory(t.m, {"snapkv", "scalekv"}, "30%", KVOptions{}, 0);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].policy, "full");
  for (const auto& r : rows) {
    EXPECT_EQ(r.measured, r.planned) << r.policy;
    EXPECT_GT(r.measured, 0);
  }
  EXPECT_LT(rows[1].share_of_full, 0.6);
  std::string verdict;
  EXPECT_FALSE(kv_memory_criterion(rows, &verdict));  // 30% of a 6-scale model is far above 12.5% of full
  EXPECT_NE(verdict.find("scalekv at 30%"), std::string::npos) << verdict;
  const std::string md = kv_memory_markdown(rows, "tiny", "cmd");
  EXPECT_NE(md.find("| scalekv | 30% | 20 |"), std::string::npos) << md;
}

TEST(KVBench, FidelityIsPerfectWhenNothingIsEvictedAndDropsOtherwise) {
  Tiny t;
  const auto rows = measure_fidelity(t.m, {0, 1}, {"sliding-window"}, {"100%", "10%"}, KVOptions{});
  ASSERT_EQ(rows.size(), 3u);
  const FidelityRow& keep_all = rows[1];
  for (double a : keep_all.agreement) EXPECT_EQ(a, 1.0);
  EXPECT_EQ(keep_all.psnr, 100.0);
  EXPECT_NEAR(keep_all.ssim, 1.0, 1e-12);
  const FidelityRow& small = rows[2];
  EXPECT_EQ(small.agreement[0], 1.0);  // scale 0 sees no cache
  double mean = 0;
  for (double a : small.agreement) mean += a / small.agreement.size();
  EXPECT_LT(mean, 1.0);
  EXPECT_LT(small.kv_share, 1.0);
  const std::string md = fidelity_markdown(rows, "tiny", "cmd", 2);
  EXPECT_NE(md.find("| sliding-window | 10% |"), std::string::npos) << md;
}

}  // namespace skv
