// KV policies under real MPI tensor parallelism (ctest: mpiexec -n 1, 2, 4). Every rank of the TP group
// must reach the same budget decisions (store lengths per scale, ScaleKV's drafters and per-layer
// budgets) - checked by gathering them from all ranks - and they must equal the one-rank decisions;
// for ScaleKV, the heads each rank keeps, put together, are exactly the one-rank selection.
#include <gtest/gtest.h>

#include "kvcache/scalekv.h"
#include "kvcache/scalekv_tp_harness.h"
#include "models/var_test_util.h"
#include "runtime/models/var_generate.h"

namespace skv {

namespace {

VarConfig tp_config() { return test::tiny_var_config("tp-kv", 3, {1, 2, 3, 4, 6, 8}, 1); }


// Decisions of one run, flattened: store length per scale, then (ScaleKV) drafters and budgets.
std::vector<int64_t> decisions(const VarConfig& c, const std::string& name, Communicator& comm,
                               std::vector<std::vector<int64_t>>* tokens) {
  VarModel model(c, WeightLoader(9, cpu_backend()), comm);
  VQVAE vae(c, WeightLoader(10, cpu_backend()));
  auto p = test::make_test_policy(name, 20, c);  // of 66 cached tokens
  VarRequest req;
  req.labels = {1, 4};
  VarRunOptions opt;
  opt.policy = p.get();
  opt.decode = false;
  const GenerateResult r = var_generate(model, vae, req, opt);
  *tokens = r.tokens;
  std::vector<int64_t> d;
  for (const auto& t : r.timings) d.push_back(t.kv_store_tokens);
  if (auto* s = dynamic_cast<ScaleKVPolicy*>(p.get())) {
    d.push_back(-1);
    for (int l : s->drafters()) d.push_back(l);
    d.push_back(-1);
    for (int si = 0; si < c.schedule().num_scales(); ++si)
      for (int l = 0; l < c.depth; ++l) d.push_back(s->layer_budget(l, si));
  }
  return d;
}

// Every rank holds the same vector (gathered and compared element by element).
void expect_same_on_every_rank(Communicator& comm, const std::vector<int64_t>& mine, const std::string& what) {
  int64_t n = static_cast<int64_t>(mine.size());
  std::vector<int64_t> sizes(comm.size());
  comm.all_gather(&n, sizes.data(), 1, DType::I64);
  for (int64_t s : sizes) ASSERT_EQ(s, n) << what << ": ranks disagree on the number of decisions";
  std::vector<int64_t> all(static_cast<size_t>(n) * comm.size());
  comm.all_gather(mine.data(), all.data(), static_cast<size_t>(n), DType::I64);
  for (int r = 0; r < comm.size(); ++r)
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(all[r * n + i], mine[i]) << what << ": rank " << r << " decision " << i;
}

}  // namespace

TEST(TensorParallelKVPolicies, EveryRankMakesTheOneRankDecisions) {
  auto world = make_mpi_world_communicator();
  if (4 % world->size() != 0) GTEST_SKIP() << "4 heads do not split over " << world->size() << " ranks";
  const VarConfig c = tp_config();
  for (const std::string name : {"full", "sliding-window", "streamingllm", "snapkv", "pyramidkv", "scalekv"}) {
    auto local = make_local_communicator();
    std::vector<std::vector<int64_t>> tok1, tokn;
    const auto one = decisions(c, name, *local, &tok1);
    const auto mine = decisions(c, name, *world, &tokn);
    EXPECT_EQ(tokn, tok1) << name << " tokens";
    EXPECT_EQ(mine, one) << name << " decisions (TP " << world->size() << " vs TP 1)";
    expect_same_on_every_rank(*world, mine, name);
  }
}

TEST(TensorParallelKVPolicies, ScaleKVKeepsTheOneRankTokensPerHead) {
  auto world = make_mpi_world_communicator();
  const int H = 4;
  if (H % world->size() != 0) GTEST_SKIP() << H << " heads do not split over " << world->size() << " ranks";
  const Schedule s = Schedule::square({1, 2, 3, 4, 6, 8, 10});
  const int depth = 5, R = 2, hd = 8;
  const auto data = test::make_layer_data(s, depth, R, H, hd);
  for (const ScaleKVScoring scoring : {ScaleKVScoring::Reference, ScaleKVScoring::Paper}) {
    ScaleKVOptions o;
    o.budget = 20;
    o.window = 16;
    o.drafters_per_scale = 2;
    o.scoring = scoring;
    auto local = make_local_communicator();
    ScaleKVPolicy one(o, depth, s);
    const auto kept1 = test::run_heads(data, s, depth, R, 0, H, hd, one, *local);
    ScaleKVPolicy mine(o, depth, s);
    const int per = H / world->size(), h0 = world->rank() * per;
    const auto kept = test::run_heads(data, s, depth, R, h0, h0 + per, hd, mine, *world);
    EXPECT_EQ(mine.drafters(), one.drafters());
    for (const auto& [key, v] : kept) EXPECT_EQ(v, kept1.at(key)) << "scale " << std::get<0>(key) << " layer "
                                                                 << std::get<1>(key) << " head " << std::get<3>(key);
    std::vector<int64_t> d(mine.drafters().begin(), mine.drafters().end());
    expect_same_on_every_rank(*world, d, "drafters");
  }
}

}  // namespace skv
