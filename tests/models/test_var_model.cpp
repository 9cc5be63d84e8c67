// VAR model mechanics on small random models: loading errors, TP size errors, determinism, that the
// KV cache changes nothing (cached scale-by-scale run == teacher-forced tokens reproduce), and that
// requests stepped together (VarGeneration::step, as the engine runs them) generate what they do alone.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <utility>

#include "parallel/communicator.h"
#include "runtime/check.h"
#include "runtime/models/random_checkpoint.h"
#include "runtime/models/var_generate.h"
#include "models/var_test_util.h"
#include "test_util.h"

namespace skv {

namespace {

VarConfig tiny_config() { return test::tiny_var_config("tiny", 2, {1, 2, 3}); }

struct Files {
  std::string dir, var, vae;
  Files() {
    dir = (std::filesystem::temp_directory_path() / ("skv_var_" + std::to_string(::getpid()))).string();
    std::filesystem::create_directories(dir);
    var = dir + "/m.var.safetensors";
    vae = dir + "/m.vae.safetensors";
  }
  ~Files() { std::filesystem::remove_all(dir); }
};

}  // namespace

TEST(VarModel, RandomCheckpointLoadsAndGeneratesDeterministically) {
  VarConfig cfg = tiny_config();
  Files f;
  write_random_var_checkpoint(cfg, f.var, f.vae, 3);
  SafeTensors wst(f.var), vst(f.vae);
  auto comm = make_local_communicator();
  VarModel model(cfg, wst, cpu_backend(), *comm);
  VQVAE vae(cfg, vst, cpu_backend());
  VarRequest req;
  req.labels = {1, 4, 2};
  req.sampling = {5, 0.9f};
  req.seed = 11;
  VarRunOptions opt;
  GenerateResult a = var_generate(model, vae, req, opt);
  GenerateResult b = var_generate(model, vae, req, opt);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.images.shape(), Shape({3, 3, 6, 6}));
  // The same image id gives the same tokens whatever the batch it is in.
  VarRequest one = req;
  one.labels = {4};
  one.image_ids = {1};
  GenerateResult c = var_generate(model, vae, one, opt);
  for (int si = 0; si < 3; ++si) {
    const int64_t l = cfg.patch_nums[si] * cfg.patch_nums[si];
    for (int64_t j = 0; j < l; ++j) EXPECT_EQ(c.tokens[si][j], a.tokens[si][l + j]);
  }
  // Teacher forcing with the run's own tokens reproduces them.
  VarRunOptions tf;
  tf.teacher = &a.tokens;
  GenerateResult d = var_generate(model, vae, req, tf);
  EXPECT_EQ(d.tokens, a.tokens);
  EXPECT_LT(std::abs(d.images.f32()[7] - a.images.f32()[7]), 1e-6);
}

// The engine's use of VarGeneration: three requests with their own labels (1 to 3 images), CFG, top-k,
// seeds and KV policies (full, ScaleKV and SnapKV at 20 of 66 cached tokens) join a running batch at
// different steps (request 2 when request 1 is at scale 2, request 3 one step later), are stepped
// together as one packed pass per step and leave when done. Each must get exactly the tokens of its
// run alone (var_generate) and its images within 1/255.
TEST(VarModel, GenerationsSteppedTogetherMatchRunsAlone) {
  const VarConfig c = test::tiny_var_config("batch", 3, {1, 2, 3, 4, 6, 8});
  auto comm = make_local_communicator();
  VarModel model(c, WeightLoader(9, cpu_backend()), *comm);
  VQVAE vae(c, WeightLoader(10, cpu_backend()));
  struct Job {
    std::vector<int64_t> labels;
    double cfg;
    int top_k;
    uint64_t seed;
    std::string policy;
    int joins_at_step;
  };
  const std::vector<Job> jobs = {{{1, 4}, 1.5, 900, 11, "full", 0},
                                 {{2}, 3.0, 5, 12, "scalekv", 2},
                                 {{0, 3, 1}, 0.5, 900, 13, "snapkv", 3}};
  auto request = [](const Job& j) {
    VarRequest r;
    r.labels = j.labels;
    r.cfg = j.cfg;
    r.sampling = {j.top_k, 0.0f};
    r.seed = j.seed;
    return r;
  };
  std::vector<GenerateResult> alone;
  for (const Job& j : jobs) {
    auto p = test::make_test_policy(j.policy, 20, c);
    VarRunOptions o;
    o.policy = p.get();
    alone.push_back(var_generate(model, vae, request(j), o));
  }

  std::vector<std::unique_ptr<KVPolicy>> policies;
  // One page pool for every request, as in the engine (it outlives their caches).
  KVPagePool pages(model.backend());
  std::vector<std::pair<size_t, std::unique_ptr<VarGeneration>>> running;  // (job, generation)
  std::vector<GenerateResult> together(jobs.size());
  std::vector<size_t> batch_sizes;
  for (int step = 0; step == 0 || !running.empty(); ++step) {
    for (size_t i = 0; i < jobs.size(); ++i)
      if (jobs[i].joins_at_step == step) {
        policies.push_back(test::make_test_policy(jobs[i].policy, 20, c));
        VarRunOptions o;
        o.policy = policies.back().get();
        running.emplace_back(i, std::make_unique<VarGeneration>(model, vae, request(jobs[i]), o, &pages));
      }
    std::vector<VarGeneration*> batch;
    for (auto& [i, g] : running) batch.push_back(g.get());
    VarGeneration::step(batch);
    batch_sizes.push_back(batch.size());
    for (auto it = running.begin(); it != running.end();) {
      if (it->second->done()) {
        together[it->first] = it->second->finish();
        it = running.erase(it);
      } else {
        ++it;
      }
    }
  }
  // Steps 0-1: request 1 alone; 2: two; 3-5: three; 6-8: the two latecomers after request 1 left.
  EXPECT_EQ(batch_sizes, (std::vector<size_t>{1, 1, 2, 3, 3, 3, 2, 2, 1}));
  for (size_t i = 0; i < jobs.size(); ++i) {
    EXPECT_EQ(together[i].tokens, alone[i].tokens) << "request " << i + 1 << " (" << jobs[i].policy << ")";
    ASSERT_EQ(together[i].images.shape(), alone[i].images.shape());
    EXPECT_LE(test::max_abs_diff(together[i].images, alone[i].images), 1.0 / 255) << "request " << i + 1;
    EXPECT_EQ(together[i].timings.size(), c.patch_nums.size());
  }
  EXPECT_NE(alone[1].timings.back().kv_store_tokens, alone[0].timings.back().kv_store_tokens)
      << "ScaleKV at 20 tokens must hold fewer tokens than the full cache";
}

TEST(VarModel, CheckpointNotMatchingTheConfigNamesTensorAndShapes) {
  VarConfig cfg = tiny_config();
  Files f;
  write_random_var_checkpoint(cfg, f.var, f.vae, 3);
  VarConfig wider = cfg;
  wider.embed_dim = 128;
  SafeTensors wst(f.var);
  auto comm = make_local_communicator();
  try {
    VarModel m(wider, wst, cpu_backend(), *comm);
    FAIL();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(f.var), std::string::npos) << m;
    EXPECT_NE(m.find("expected [128, 8]"), std::string::npos) << m;
  }
}

TEST(VarModel, TensorParallelSizeMustDivideHeads) {
  class FakeComm final : public Communicator {
   public:
    int rank() const override { return 0; }
    int size() const override { return 3; }
    std::string name() const override { return "fake"; }
    void all_reduce_sum(void*, size_t, DType) override {}
    void all_gather(const void*, void*, size_t, DType) override {}
    void broadcast(void*, size_t, int) override {}
    void barrier() override {}
  } comm;
  WeightLoader wl(1, cpu_backend());
  try {
    VarModel m(tiny_config(), wl, comm);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("valid sizes: 1, 2, 4"), std::string::npos) << e.what();
  }
}

TEST(VarConfig, BadFieldsAreNamed) {
  const std::string p = (std::filesystem::temp_directory_path() / "skv_bad_cfg.json").string();
  auto err = [&](const std::string& body) {
    std::ofstream(p) << body;
    try {
      VarConfig::load(p);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const std::string ok = R"("depth":2,"embed_dim":64,"num_heads":4,"patch_nums":[1,2],"V":8,"Cvae":4,"num_classes":3,"ch":32,"vae_ch_mult":[1,2])";
  EXPECT_EQ(err("{" + ok + "}"), "");
  EXPECT_NE(err(R"({"depth":2})").find("missing field 'embed_dim'"), std::string::npos);
  // The config with one field replaced (a key may appear only once).
  auto with = [&](const std::string& key, const std::string& value) {
    nlohmann::json j = nlohmann::json::parse("{" + ok + "}");
    j[key] = nlohmann::json::parse(value);
    return j.dump();
  };
  EXPECT_NE(err(with("num_heads", "5")).find("field 'num_heads'"), std::string::npos);
  EXPECT_NE(err(R"({"depth":"x","embed_dim":64})").find("field 'depth' must be an integer"), std::string::npos);
  EXPECT_NE(err(with("patch_nums", "[2,1]")).find("strictly increasing"), std::string::npos);
  // Hostile input, class 3: depth 2^32 + 6 once ran as depth 6.
  EXPECT_NE(err(with("depth", "4294967302")).find("field 'depth' is 4294967302, outside [1, 4096]"), std::string::npos)
      << err(with("depth", "4294967302"));
  EXPECT_NE(err(with("patch_nums", "[1, 4294967298]")).find("field 'patch_nums' holds 4294967298"), std::string::npos);
  EXPECT_NE(err(with("top_k", "1e300")).find("field 'top_k' is 1e+300"), std::string::npos)
      << err(with("top_k", "1e300"));
  EXPECT_NE(err(with("vae_ch_mult", "[1,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2]"))
                .find("field 'vae_ch_mult' must be an array of at most 16"),
            std::string::npos);
  // Class 5: a duplicate key is an error, a misspelt optional key too ("did you mean").
  EXPECT_NE(err("{" + ok + R"(,"depth":6})").find("key 'depth' appears twice"), std::string::npos);
  EXPECT_NE(err(with("kv_windw", "4")).find("unknown field 'kv_windw': did you mean 'kv_window'?"), std::string::npos);
  EXPECT_EQ(err(with("trained_on", "\"fmnist\"")), "") << "an unknown key far from every known one only warns";
  EXPECT_NE(err("{not json").find("not valid JSON"), std::string::npos);
  std::filesystem::remove(p);
}

}  // namespace skv
