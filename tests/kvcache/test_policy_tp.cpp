// Every policy under tensor parallelism: a VAR model split over two ranks (threads with a summing
// communicator) generates the same tokens on both ranks, and both ranks make the same budget decisions
// (store length of every layer after every scale; ScaleKV's drafters), equal to one rank's decisions.
#include <gtest/gtest.h>

#include "kvcache/scalekv.h"
#include "runtime/models/var_generate.h"
#include "models/var_test_util.h"
#include "device_claiming_comm.h"
#include "thread_comm.h"

namespace skv {

namespace {

VarConfig tp_config() { return test::tiny_var_config("tp", 3, {1, 2, 3, 4, 6, 8}, 1); }

struct Outcome {
  std::vector<std::vector<int64_t>> tokens;
  std::vector<int64_t> lengths;  // per scale: the summed store length (ScaleTiming::kv_store_tokens)
  std::vector<int> drafters;
};

Outcome run(const VarConfig& c, const std::string& name, Communicator& comm) {
  VarModel model(c, WeightLoader(9, cpu_backend()), comm);
  VQVAE vae(c, WeightLoader(10, cpu_backend()));
  auto p = test::make_test_policy(name, 20, c);  // of 66 cached tokens
  VarRequest req;
  req.labels = {1, 4};
  VarRunOptions opt;
  opt.policy = p.get();
  opt.decode = false;
  const GenerateResult r = var_generate(model, vae, req, opt);
  Outcome o;
  o.tokens = r.tokens;
  for (const auto& t : r.timings) o.lengths.push_back(t.kv_store_tokens);
  if (auto* s = dynamic_cast<ScaleKVPolicy*>(p.get())) o.drafters = s->drafters();
  return o;
}

}  // namespace

TEST(PoliciesTensorParallel, TwoRanksMakeIdenticalDecisions) {
  const VarConfig c = tp_config();
  for (const std::string name : {"full", "sliding-window", "streamingllm", "snapkv", "pyramidkv", "scalekv"}) {
    auto local = make_local_communicator();
    const Outcome one = run(c, name, *local);
    std::vector<Outcome> ranks(2);
    test::ThreadGroup g(2);
    g.run([&](int rank, Communicator& comm) { ranks[rank] = run(c, name, comm); });
    EXPECT_EQ(ranks[0].tokens, ranks[1].tokens) << name;
    EXPECT_EQ(ranks[0].lengths, ranks[1].lengths) << name;
    EXPECT_EQ(ranks[0].drafters, ranks[1].drafters) << name;
    EXPECT_EQ(ranks[0].lengths, one.lengths) << name;  // budgets do not depend on the TP size
    // The same under a communicator that claims device buffers (as NCCL does): every collective the
    // model, the policy and ScaleKV's online calibration make respects the memory contract.
    std::vector<Outcome> dev(2);
    std::vector<int> host_calls(2), tensor_calls(2);
    test::ThreadGroup g2(2);
    g2.run([&](int rank, Communicator& comm) {
      test::DeviceClaimingComm dc(comm);
      dev[rank] = run(c, name, dc);
      host_calls[rank] = dc.host_calls, tensor_calls[rank] = dc.tensor_calls;
    });
    EXPECT_EQ(dev[0].tokens, ranks[0].tokens) << name;
    EXPECT_EQ(dev[0].lengths, ranks[0].lengths) << name;
    EXPECT_EQ(dev[0].drafters, ranks[0].drafters) << name;
    EXPECT_GT(tensor_calls[0], 0) << name;
    EXPECT_GT(host_calls[0], 0) << name;  // the token broadcast, and ScaleKV's statistics
    if (name == "scalekv") {
      EXPECT_EQ(ranks[0].drafters.size(), 1u);
      EXPECT_EQ(ranks[0].drafters, one.drafters);
    }
  }
}

}  // namespace skv
