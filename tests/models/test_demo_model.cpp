// The shipped demo model (models/demo) generates the pinned tokens of tests/models/demo_tokens.json
// (and, with --compute-dtype bf16, of demo_tokens_bf16.json):
// every class, two seeds, the config's CFG and top-k, with the full cache and with ScaleKV at 10 %.
// Any change to an op, the sampler, the RNG, a KV policy or the weights that moves a token fails
// here, naming the first differing (run, scale, position). After a deliberate change, re-pin with
// SKV_UPDATE_DEMO_TOKENS=1 OPENBLAS_CORETYPE=Haswell build/bin/skv_unit_tests --gtest_filter='DemoModel.*' (the
// kernels ctest runs them with: tests/CMakeLists.txt) and say why in
// the commit. (That the runtime matches the PyTorch code the model was trained with is checked by
// tests/scripts/test_demo_parity.sh, greedy, image for image.)
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "launcher/kv_options.h"
#include "launcher/var_bundle.h"
#include "parallel/communicator.h"
#include "runtime/backend.h"

namespace skv {
namespace {

const std::string kDir = std::string(SKV_SOURCE_DIR) + "/models/demo";
const std::string kPin = std::string(SKV_SOURCE_DIR) + "/tests/models/demo_tokens.json";

nlohmann::json run_demo(const VarBundle& b, const std::string& policy, uint64_t seed) {
  KVOptions o;
  o.policy = policy;
  o.budget = "10%";
  auto pol = make_kv_policy(o, {b.cfg.depth, b.cfg.num_heads, b.cfg.schedule(), b.cfg.kv_window});
  VarRequest req;
  for (int c = 0; c < b.cfg.num_classes; ++c) req.labels.push_back(c);
  req.cfg = b.cfg.cfg;
  req.sampling = {b.cfg.top_k, b.cfg.top_p};
  req.seed = seed;
  VarRunOptions opt;
  opt.policy = pol.get();
  opt.decode = false;
  return var_generate(*b.model, *b.vae, req, opt).tokens;
}

// Every class, two seeds, full cache and ScaleKV 10 %, with the backend's current dtypes.
nlohmann::json run_all() {
  auto comm = make_local_communicator();
  ModelFiles f{kDir + "/var-fmnist.config.json", kDir + "/var-fmnist.var.safetensors",
               kDir + "/var-fmnist.vae.safetensors"};
  auto b = load_var_bundle(f, false, 0, backend_for("cpu"), *comm);
  nlohmann::json got;
  for (const std::string policy : {"full", "scalekv"})
    for (uint64_t seed : {0, 1}) got[policy + "/seed" + std::to_string(seed)] = run_demo(*b, policy, seed);
  return got;
}

// Compares with the pin at `path`, naming the first differing token (or writes it: SKV_UPDATE_DEMO_TOKENS=1).
void expect_pinned(const nlohmann::json& got, const std::string& path) {
  if (const char* u = std::getenv("SKV_UPDATE_DEMO_TOKENS"); u && std::string(u) == "1") {
    std::ofstream(path) << got.dump() << "\n";
    GTEST_SKIP() << "wrote " << path;
  }
  std::ifstream in(path);
  ASSERT_TRUE(in.good()) << path << " is missing (SKV_UPDATE_DEMO_TOKENS=1 writes it)";
  const nlohmann::json want = nlohmann::json::parse(in);
  ASSERT_EQ(want.size(), got.size());
  for (const auto& [run, scales] : want.items()) {
    ASSERT_TRUE(got.contains(run)) << run;
    ASSERT_EQ(scales.size(), got[run].size()) << run;
    for (size_t si = 0; si < scales.size(); ++si) {
      ASSERT_EQ(scales[si].size(), got[run][si].size()) << run << " scale " << si;
      for (size_t i = 0; i < scales[si].size(); ++i)
        ASSERT_EQ(scales[si][i], got[run][si][i]) << path << ", " << run << ": first differing token at scale " << si
                                                  << ", position " << i << " (image " << i / (scales[si].size() / 10)
                                                  << ")";
    }
  }
  // The compressed run must differ from the full one somewhere, or the pin would not test the policy.
  EXPECT_NE(got["full/seed0"], got["scalekv/seed0"]);
}

TEST(DemoModel, GeneratesThePinnedTokens) { expect_pinned(run_all(), kPin); }

// --compute-dtype bf16 (bf16 weights and GEMM inputs, F32 accumulation) has its own pin: its tokens
// differ from F32's where rounding moves a sample. How many agree is a benchmark figure (README).
TEST(DemoModel, GeneratesThePinnedBf16Tokens) {
  Backend& be = backend_for("cpu");
  std::string missing;
  if (!be.compute_dtype_supported(DType::BF16, &missing)) GTEST_SKIP() << "this CPU lacks " << missing;
  struct Restore {
    Backend& be;
    ~Restore() {
      be.set_compute_dtype(DType::F32);
      be.set_weight_dtype(DType::F32);
    }
  } restore{be};
  be.set_compute_dtype(DType::BF16);
  const nlohmann::json got = run_all();
  expect_pinned(got, std::string(SKV_SOURCE_DIR) + "/tests/models/demo_tokens_bf16.json");
}

}  // namespace
}  // namespace skv
