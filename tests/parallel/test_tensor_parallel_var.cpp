// The VAR model sharded over the ranks of the job equals the one-rank model: the same tokens, logits
// and images within float tolerance, from deterministic random weights and from a checkpoint file that
// every rank maps and reads only its shard of; each rank holds 1/TP of the sharded weights and of the
// KV cache. With 4 ranks both TP 4 and two replicas of TP 2 are checked.
#include <fmt/core.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>

#include "parallel/communicator.h"
#include "runtime/check.h"
#include "runtime/models/random_checkpoint.h"
#include "runtime/models/var_generate.h"
#include "models/var_test_util.h"

namespace skv {

namespace {

VarConfig tiny_config() { return test::tiny_var_config("tiny-tp", 2, {1, 2, 3, 4}, 1); }

class LogitRecorder final : public GenerationObserver {
 public:
  std::map<int, Tensor> logits;
  void on_logits_raw(int si, const Tensor& l) override { logits[si] = l.clone(); }
};

struct Run {
  GenerateResult res;
  LogitRecorder rec;
  int64_t weight_bytes = 0;
};

void generate(const VarModel& model, const VQVAE& vae, Run& out) {
  VarRequest req;
  req.labels = {0, 3, 4};
  req.cfg = 1.5f;
  req.sampling.top_k = 3;  // sampled, not greedy: the shared RNG stream must agree too
  req.seed = 5;
  VarRunOptions opt;
  opt.observer = &out.rec;
  out.res = var_generate(model, vae, req, opt);
  out.weight_bytes = model.weight_bytes();
}

double max_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.numel(), b.numel());
  double m = 0;
  for (int64_t i = 0; i < std::min(a.numel(), b.numel()); ++i)
    m = std::max(m, static_cast<double>(std::fabs(a.f32()[i] - b.f32()[i])));
  return m;
}

void expect_same(const Run& tp, const Run& one, int tp_size, const std::string& what) {
  EXPECT_EQ(tp.res.tokens, one.res.tokens) << what;
  for (const auto& [si, l] : one.rec.logits) EXPECT_LE(max_diff(tp.rec.logits.at(si), l), 1e-4) << what << " scale " << si;
  EXPECT_LE(max_diff(tp.res.images, one.res.images), 1e-4) << what;
  EXPECT_EQ(tp.res.kv_store_bytes * tp_size, one.res.kv_store_bytes) << what << ": each rank caches only its heads";
  const int64_t sharded = var_param_count(tiny_config()).sharded() * 4;  // F32 weights
  EXPECT_EQ(tp.weight_bytes, one.weight_bytes - sharded + sharded / tp_size) << what;
}

// TP groups of `group` consecutive ranks (the launcher's layout); each rank also runs TP 1 itself.
void check_groups(int group, bool from_file) {
  auto world = make_mpi_world_communicator();
  if (world->size() % group != 0) GTEST_SKIP() << world->size() << " ranks do not split into TP " << group;
  auto tp = world->split(world->rank() / group, world->rank());
  ASSERT_EQ(tp->size(), group);
  auto one = make_local_communicator();
  const VarConfig cfg = tiny_config();
  Run a, b;
  if (from_file) {
    int64_t pid = getpid();
    world->broadcast(&pid, sizeof(pid), 0);  // rank 0 names the folder every rank reads
    const std::string dir = (std::filesystem::temp_directory_path() / fmt::format("skv_tp_{}", pid)).string();
    const std::string var = dir + "/t.var.safetensors", vae = dir + "/t.vae.safetensors";
    if (world->rank() == 0) {
      std::filesystem::create_directories(dir);
      write_random_var_checkpoint(cfg, var, vae, 21);
    }
    world->barrier();
    {
      SafeTensors wst(var), vst(vae);
      VQVAE v(cfg, vst, cpu_backend());
      VarModel sharded(cfg, wst, cpu_backend(), *tp);
      generate(sharded, v, a);
      VarModel whole(cfg, wst, cpu_backend(), *one);
      generate(whole, v, b);
    }
    world->barrier();
    if (world->rank() == 0) std::filesystem::remove_all(dir);
  } else {
    WeightLoader wl(7, cpu_backend()), wl1(7, cpu_backend()), vl(8, cpu_backend());  // a loader counts its bytes
    VQVAE v(cfg, vl);
    VarModel sharded(cfg, wl, *tp);
    generate(sharded, v, a);
    VarModel whole(cfg, wl1, *one);
    generate(whole, v, b);
  }
  expect_same(a, b, group, fmt::format("TP {} (rank {} of {})", group, world->rank(), world->size()));
}

}  // namespace

TEST(TensorParallelVar, WholeWorldEqualsOneRank) {
  auto world = make_mpi_world_communicator();
  check_groups(world->size(), false);
}

TEST(TensorParallelVar, ReplicasOfTp2EqualOneRank) { check_groups(2, false); }

TEST(TensorParallelVar, ShardedCheckpointEqualsOneRank) {
  auto world = make_mpi_world_communicator();
  check_groups(world->size(), true);
}

TEST(TensorParallelVar, HeadsNotDivisibleListValidSizes) {
  auto world = make_mpi_world_communicator();
  if (world->size() != 4) GTEST_SKIP() << "needs 4 ranks";
  VarConfig cfg = tiny_config();
  cfg.num_heads = 2;  // 2 heads over 4 ranks
  WeightLoader wl(7, cpu_backend());
  try {
    VarModel m(cfg, wl, *world);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("valid sizes: 1, 2"), std::string::npos) << e.what();
  }
}

TEST(TensorParallelVar, AllReducedBytesPerScale) {
  // Two all-reduces of [2B, l, C] F32 per block: what the scaling benchmark reports per scale.
  auto world = make_mpi_world_communicator();
  const VarConfig cfg = tiny_config();
  WeightLoader wl(7, cpu_backend()), vl(8, cpu_backend());
  VQVAE v(cfg, vl);
  VarModel m(cfg, wl, *world);
  std::vector<int64_t> per_scale;
  int64_t prev = world->bytes_all_reduced();
  VarRequest req;
  req.labels = {1, 2};
  VarRunOptions opt;
  opt.decode = false;
  opt.progress = [&](int, int, double) {
    per_scale.push_back(world->bytes_all_reduced() - prev);
    prev = world->bytes_all_reduced();
  };
  var_generate(m, v, req, opt);
  ASSERT_EQ(per_scale.size(), cfg.patch_nums.size());
  for (size_t si = 0; si < per_scale.size(); ++si) {
    const int64_t l = int64_t(cfg.patch_nums[si]) * cfg.patch_nums[si];
    const int64_t want = world->size() == 1 ? 0 : 2 * cfg.depth * (2 * 2) * l * cfg.embed_dim * 4;  // TP 1 moves nothing
    EXPECT_EQ(per_scale[si], want) << "scale " << si;
  }
}

}  // namespace skv
