// `scalekv plan`: the paper's Table 1 figures from the Infinity configs alone, VAR configs, tensor
// parallel splits, the largest batch and bad input; the plan's shape is the model's own config parser's
// (it once re-parsed Infinity configs: V 28 for the 8B, Cvae 32 always, no /256 FFN rounding) and its
// weight bytes are what the model's constructor places, at TP 1 and 2, F32 and BF16.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "launcher/model_plan.h"
#include "runtime/check.h"
#include "runtime/json_util.h"
#include "runtime/models/infinity_model.h"
#include "runtime/models/var_model.h"
#include "thread_comm.h"

namespace skv {

namespace {

std::string cfg(const std::string& name) { return std::string(SKV_SOURCE_DIR) + "/configs/" + name; }

double mib(int64_t b) { return static_cast<double>(b) / (1024.0 * 1024.0); }

PlanArgs paper_args(const std::string& model, const std::string& policy) {
  PlanArgs a;
  a.model = cfg(model);
  a.batch = 8;
  a.k_dtype = "f32";
  a.v_dtype = "bf16";
  a.kv.policy = policy;
  a.kv.budget = "10%";
  return a;
}

// Writes `j` to a temporary config file, removed when the holder goes.
struct TempConfig {
  std::string path;
  explicit TempConfig(const nlohmann::json& j, const std::string& tag)
      : path((std::filesystem::temp_directory_path() / fmt::format("skv_plan_{}_{}.json", tag, ::getpid())).string()) {
    std::ofstream(path) << j.dump(1);
  }
  ~TempConfig() { std::filesystem::remove(path); }
};

// Bytes the model places on rank 0 of a TP group of `tp` thread ranks, with Linear weights in `dt`.
template <class Model, class Config>
int64_t placed_bytes(const Config& c, int tp, DType dt) {
  cpu_backend().set_weight_dtype(dt);
  std::vector<int64_t> bytes(tp);
  test::ThreadGroup g(tp);
  g.run([&](int r, Communicator& comm) {
    WeightLoader wl(7, cpu_backend());
    bytes[r] = Model(c, wl, comm).weight_bytes();
  });
  cpu_backend().set_weight_dtype(DType::F32);
  for (int r = 1; r < tp; ++r) EXPECT_EQ(bytes[r], bytes[0]) << "rank " << r;
  return bytes[0];
}

// The plan's weight bytes for `config` against the model built from the same file, TP 1 and 2, F32 and BF16.
template <class Model, class Config>
void expect_plan_weights_are_placed_bytes(const std::string& config, const std::string& what) {
  const Config c = Config::load(config);
  for (int tp : {1, 2})
    for (const char* wd : {"f32", "bf16"}) {
      PlanArgs a;
      a.model = config;
      a.tp = tp;
      a.weight_dtype = wd;
      const PlanResult r = make_plan(a);
      EXPECT_EQ(r.weight_bytes, (placed_bytes<Model>(c, tp, dtype_from_cli(wd)))) << what << " TP " << tp << " " << wd;
    }
}

// A tiny Infinity config in the shipped layout (2 heads, 0.06M schedule) with the given overrides.
nlohmann::json tiny_infinity_json(const nlohmann::json& kwargs = {}, const nlohmann::json& vae = {}) {
  nlohmann::json j = {{"family", "infinity"}, {"name", "tiny"},
                      {"infinity_kwargs", {{"depth", 2}, {"embed_dim", 64}, {"num_heads", 2}, {"mlp_ratio", 4},
                                           {"text_channels", 128}, {"text_maxlen", 16}, {"block_chunks", 2}}},
                      {"vae", {{"codebook_dim", 8}, {"patch_size", 4}, {"base_ch", 32}, {"num_res_blocks", 1},
                               {"decoder_ch_mult", {1, 1, 2}}}},
                      {"sampling", {{"resolution", 256}, {"h_div_w", 1.0}}}};
  for (const auto& [k, v] : kwargs.items()) j["infinity_kwargs"][k] = v;
  for (const auto& [k, v] : vae.items()) j["vae"][k] = v;
  return j;
}

}  // namespace

// Drift bug: model_plan.cpp parsed Infinity configs a second time - V 28 instead of 112 for the 8B,
// Cvae always 32, the FFN width without the official /256 rounding. Now every figure is InfinityConfig's.
TEST(ModelPlan, InfinityShapeIsInfinityConfigs) {
  for (const auto& [name, V, dv, F] : std::vector<std::tuple<std::string, int, int, int>>{
           {"infinity-2b.json", 64, 32, 8192}, {"infinity-8b.json", 112, 56, 14336}}) {
    const InfinityConfig c = InfinityConfig::load(cfg(name));
    const ModelShape s = load_model_shape(cfg(name));
    EXPECT_EQ(s.vocab, c.V()) << name;
    EXPECT_EQ(s.vocab, V) << name;
    EXPECT_EQ(s.latent_channels, c.d_vae()) << name;
    EXPECT_EQ(s.latent_channels, dv) << name;
    EXPECT_EQ(s.ffn_hidden, c.ffn_hidden()) << name;
    EXPECT_EQ(s.ffn_hidden, F) << name;
    EXPECT_EQ(s.head_dim, c.head_dim()) << name;
    const ParamCount p = infinity_param_count(c);
    EXPECT_EQ(s.params.replicated(), p.replicated()) << name;
    EXPECT_EQ(s.params.sharded(), p.sharded()) << name;
    const auto j = nlohmann::json::parse(plan_json(make_plan(paper_args(name, "full")), paper_args(name, "full")));
    EXPECT_EQ(j["vocab"].get<int>(), V) << name;
    EXPECT_EQ(j["latent_channels"].get<int>(), dv) << name;
    EXPECT_EQ(j["ffn_hidden"].get<int>(), F) << name;
  }
  // An mlp_ratio whose width is not a multiple of 256: round(2048 * 2.7 / 256) * 256 = 5632, not 5530.
  nlohmann::json j = read_json_file(cfg("infinity-2b.json"));
  j["infinity_kwargs"]["mlp_ratio"] = 2.7;
  const TempConfig odd(j, "mlp");
  EXPECT_EQ(load_model_shape(odd.path).ffn_hidden, 5632);
  EXPECT_EQ(load_model_shape(odd.path).ffn_hidden, InfinityConfig::load(odd.path).ffn_hidden());
}

// The plan's weight bytes per rank are what InfinityModel places (random weights of a tiny config):
// plain, 8B-style spatial patchify (d_vae = 4 x codebook_dim), per-block AdaLN, ca_gamma, an FFN width
// that the /256 rounding changes; each at TP 1 and 2 with F32 and BF16 Linear weights.
TEST(ModelPlan, InfinityWeightBytesAreWhatTheModelPlaces) {
  const std::vector<std::pair<std::string, nlohmann::json>> variants = {
      {"plain", tiny_infinity_json()},
      {"patchify", tiny_infinity_json({{"apply_spatial_patchify", 1}})},
      {"per-block AdaLN", tiny_infinity_json({{"shared_aln", false}})},
      {"ca_gamma", tiny_infinity_json({{"cross_attn_layer_scale", 1.0}})},
      {"mlp_ratio 6.5", tiny_infinity_json({{"embed_dim", 128}, {"mlp_ratio", 6.5}})},  // 832 -> 768
  };
  for (const auto& [what, j] : variants) {
    const TempConfig t(j, "inf");
    expect_plan_weights_are_placed_bytes<InfinityModel, InfinityConfig>(t.path, what);
  }
}

// The same for VAR (the plan counted the level embedding twice and scale_mul as replicated).
TEST(ModelPlan, VarWeightBytesAreWhatTheModelPlaces) {
  nlohmann::json j = {{"family", "var"}, {"depth", 2}, {"embed_dim", 64}, {"num_heads", 4},
                      {"patch_nums", {1, 2, 3, 4}}, {"V", 32}, {"Cvae", 8}, {"num_classes", 5}, {"ch", 32},
                      {"vae_ch_mult", {1, 2}}, {"vae_num_res_blocks", 1}, {"image_size", 8}};
  const TempConfig plain(j, "var");
  expect_plan_weights_are_placed_bytes<VarModel, VarConfig>(plain.path, "VAR");
  j["shared_aln"] = true;
  const TempConfig shared(j, "var_shared");
  expect_plan_weights_are_placed_bytes<VarModel, VarConfig>(shared.path, "VAR shared AdaLN");
}

TEST(ModelPlan, ReproducesThePaperTable1Figures) {
  // Infinity-2B / -8B, 1024x1024, batch 8 with CFG, fp32 K + bf16 V: 38,550 / 84,328 MB full, 3,900 / 8,531 MB at 10 %.
  const std::vector<std::tuple<std::string, std::string, double>> want = {
      {"infinity-2b.json", "full", 38550}, {"infinity-8b.json", "full", 84328},
      {"infinity-2b.json", "scalekv", 3900}, {"infinity-8b.json", "scalekv", 8531}};
  for (const auto& [model, policy, mb] : want) {
    const PlanArgs a = paper_args(model, policy);
    const PlanResult r = make_plan(a);
    EXPECT_EQ(std::lround(mib(r.kv.store_peak_bytes())), std::lround(mb)) << model << " " << policy;
    const auto j = nlohmann::json::parse(plan_json(r, a));
    EXPECT_EQ(j["kv_bytes_store_peak"].get<int64_t>(), r.kv.store_peak_bytes());
    EXPECT_EQ(j["kv_bytes_peak"].get<int64_t>(), r.kv.peak_bytes());
    EXPECT_GT(r.kv.peak_bytes(), r.kv.store_peak_bytes());  // plus the 64x64 transient
  }
  const PlanResult r = make_plan(paper_args("infinity-2b.json", "scalekv"));
  EXPECT_EQ(r.budget_tokens, 650);
  EXPECT_EQ(r.kv.transient_tokens, 4096);
}

TEST(ModelPlan, TensorParallelDividesTheCacheAndShardedWeights) {
  PlanArgs a = paper_args("infinity-2b.json", "full");
  const PlanResult one = make_plan(a);
  a.tp = 8;
  a.device_memory = "80GiB";
  const PlanResult eight = make_plan(a);
  EXPECT_EQ(eight.local_heads, 2);
  EXPECT_EQ(eight.kv.peak_bytes() * 8, one.kv.peak_bytes());
  EXPECT_LT(eight.weight_bytes, one.weight_bytes);
  EXPECT_GT(eight.weight_bytes, one.weight_bytes / 8);  // replicated parts stay
  EXPECT_GT(eight.max_batch, 8);
  a.tp = 3;
  try {
    make_plan(a);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("valid: 1, 2, 4, 8, 16"), std::string::npos) << e.what();
  }
}

TEST(ModelPlan, SchedulesFollowResolutionAndAspectRatio) {
  PlanArgs a = paper_args("infinity-2b.json", "scalekv");
  a.resolution = 512;
  PlanResult r = make_plan(a);
  EXPECT_EQ(r.shape.schedule.cached_before_last(), 1497);
  EXPECT_EQ(r.budget_tokens, 150);
  a.resolution = 1024;
  a.h_div_w = 2.0;
  r = make_plan(a);
  EXPECT_EQ(r.shape.schedule[12].h, 90);
  a.h_div_w = 1.1;
  EXPECT_THROW(make_plan(a), Error);
}

TEST(ModelPlan, VarConfigsPlanToo) {
  const std::string golden = std::string(SKV_GOLDEN_DIR) + "/var-tiny-a.config.json";
  if (!std::filesystem::exists(golden)) GTEST_SKIP() << golden << " is absent";
  PlanArgs a;
  a.model = golden;
  a.batch = 2;
  const PlanResult r = make_plan(a);
  EXPECT_EQ(r.shape.depth, 4);
  EXPECT_EQ(r.kv.store_peak_tokens, 66 * 4);  // 1+4+9+16+36 cached tokens per layer
  // 4 rows x 4 heads x 64 x (4 + 4) bytes per token and layer; the 264 stored tokens take 5 pages of 64 slots
  EXPECT_EQ(r.kv.peak_bytes(), (5 * 64 + 64) * 4 * 4 * 64 * 8);
  EXPECT_GT(r.weight_bytes, 0);
  a.resolution = 512;
  EXPECT_THROW(make_plan(a), Error);
}

// --kv-memory: how many requests a burst holds in flight at once under a KV cap (serve's admission replayed on
// the plans): the VAR-d16 figures of Admission.ABurstOf200RequestsOnRealPlansStaysUnderTheCap, and a cap
// under one request's peak is 0 with the reason, not an error.
TEST(ModelPlan, AKVCapGivesTheRequestsABurstHoldsInFlight) {
  PlanArgs a;
  a.model = cfg("var-d16.json");
  a.kv.policy = "scalekv";
  a.kv.budget = "10%";
  a.kv_memory = "440MiB";  // 4 full-cache requests at their peak of 110 MiB
  PlanResult r = make_plan(a);
  EXPECT_EQ(r.full.peak_bytes(), 110 << 20);
  EXPECT_EQ(r.full_burst_in_flight, 4);
  EXPECT_EQ(r.burst_in_flight, 30);
  EXPECT_NE(plan_text(r, a).find("holds at most 30 in flight with scalekv, 4 with the full cache (7.5x)"), std::string::npos)
      << plan_text(r, a);
  const auto j = nlohmann::json::parse(plan_json(r, a));
  EXPECT_EQ(j.at("burst_in_flight"), 30);
  EXPECT_EQ(j.at("full_burst_in_flight"), 4);
  EXPECT_EQ(j.at("kv_memory"), 440 << 20);
  a.kv_memory = "100MiB";  // under the full cache's peak, over ScaleKV's 15 MiB
  r = make_plan(a);
  EXPECT_EQ(r.full_burst_in_flight, 0);
  EXPECT_GT(r.burst_in_flight, 0);
  EXPECT_NE(plan_text(r, a).find("0 (its scale step 8 needs"), std::string::npos) << plan_text(r, a);
  a.kv_memory = "0";
  EXPECT_THROW(make_plan(a), Error);
  a.kv_memory = "lots";
  EXPECT_THROW(make_plan(a), Error);
}

// Hostile input, class 6: checked arithmetic - a wrapped, negative or shrinking figure is never printed.
TEST(ModelPlan, OverflowIsAnErrorAndTheLargestBatchGrowsWithMemory) {
  PlanArgs a = paper_args("infinity-2b.json", "full");
  a.batch = 2000000000;
  std::string e;
  try {
    make_plan(a);
  } catch (const Error& x) {
    e = x.what();
  }
  EXPECT_NE(e.find("overflows 64 bits"), std::string::npos) << e;
  EXPECT_NE(e.find("use a smaller --batch"), std::string::npos) << e;
  a.batch = 8;
  int64_t last = -1;
  for (const char* m : {"40GiB", "80GiB", "1TiB", "100TiB", "1000TiB", "4000PiB"}) {
    a.device_memory = m;
    if (std::string(m) == "4000PiB") {
      EXPECT_THROW(make_plan(a), Error);  // unknown unit PiB: refused, not misread
      continue;
    }
    const PlanResult r = make_plan(a);
    EXPECT_GE(r.max_batch, last) << m;
    EXPECT_GT(r.bytes_per_image, 0);
    last = r.max_batch;
  }
  EXPECT_GT(last, int64_t{1} << 17) << "1000 TiB holds more than 2^17 images of 7.3 GiB";
  a.device_memory = "1e15GiB";
  EXPECT_THROW(make_plan(a), Error);
  a.device_memory = "inf";
  EXPECT_THROW(make_plan(a), Error);
}

// Class 5: a value given on the command line is never replaced by the config's default.
TEST(ModelPlan, GivenValuesOutOfRangeAreErrors) {
  PlanArgs a = paper_args("infinity-2b.json", "scalekv");
  a.resolution = 0;
  a.given = {"--resolution"};
  EXPECT_THROW(make_plan(a), Error);
  a.given = {"--h-div-w"};
  a.h_div_w = -1;
  EXPECT_THROW(make_plan(a), Error);
  a.h_div_w = std::nan("");
  EXPECT_THROW(make_plan(a), Error);
  a.given.clear();
  a.h_div_w = 0;
  a.kv.policy = "full";
  a.kv.given = {"--kv-budget"};
  EXPECT_THROW(make_plan(a), Error);
}

TEST(ModelPlan, MemorySizes) {
  EXPECT_EQ(parse_memory_size("80GiB"), 80LL << 30);
  EXPECT_EQ(parse_memory_size("24GB"), 24000000000LL);
  EXPECT_EQ(parse_memory_size("512MiB"), 512LL << 20);
  EXPECT_THROW(parse_memory_size("80 parsecs"), Error);
  EXPECT_THROW(parse_memory_size("lots"), Error);
}

}  // namespace skv
