// Infinity model mechanics on tiny random models: a random checkpoint written in the official key
// layout loads and gives the same images as the in-memory random weights; generation is
// deterministic, independent of batch composition and reproduced by teacher forcing; the 8B-style
// 2x2 patchify path round-trips; tensor parallel over two (thread) ranks matches one rank; CFG
// variants and user errors (long prompts, wrong text width) behave; requests stepped together
// (InfinityGeneration::step, as the engine runs them) generate what they do alone.
#include <gtest/gtest.h>

#include <algorithm>
#include <barrier>
#include <filesystem>
#include <memory>
#include <thread>
#include <utility>

#include "kvcache/policy_factory.h"
#include "parallel/communicator.h"
#include "runtime/check.h"
#include "runtime/models/infinity_generate.h"
#include "runtime/models/infinity_text.h"
#include "device_claiming_comm.h"
#include "models/infinity_test_util.h"
#include "thread_comm.h"
#include "test_util.h"

namespace skv {

namespace {

struct TempDir {
  std::string dir;
  TempDir() {
    dir = (std::filesystem::temp_directory_path() / ("skv_inf_" + std::to_string(::getpid()))).string();
    std::filesystem::create_directories(dir);
  }
  ~TempDir() { std::filesystem::remove_all(dir); }
};

// Two in-process ranks: all_reduce_sum adds both buffers in rank order (deterministic).
class LogitRecorder final : public GenerationObserver {
 public:
  std::vector<Tensor> logits;
  void on_logits(int, const Tensor& l) override { logits.push_back(l.clone()); }
};

}  // namespace

TEST(InfinityModel, RandomCheckpointMatchesRandomWeightsAndIsDeterministic) {
  const InfinityConfig cfg = test::tiny_infinity_config();
  TempDir t;
  const std::string mp = t.dir + "/m.model.safetensors", vp = t.dir + "/m.vae.safetensors";
  write_random_infinity_checkpoint(cfg, mp, vp, 9);
  SafeTensors mst(mp), vst(vp);
  EXPECT_TRUE(mst.contains("block_chunks.1.module.0.sa.mat_qkv.weight"));
  EXPECT_TRUE(mst.contains("text_proj_for_sos.ca.mat_q"));
  EXPECT_TRUE(vst.contains("decoder.up.1.upsample.conv.conv.weight"));
  auto comm = make_local_communicator();
  InfinityModel file_model(cfg, mst, cpu_backend(), *comm);
  BsqVae file_vae(cfg, vst, cpu_backend());
  WeightLoader wm(9, cpu_backend()), wv(10, cpu_backend());
  InfinityModel rnd_model(cfg, wm, *comm);
  BsqVae rnd_vae(cfg, wv);

  const InfinityRequest req = test::tiny_infinity_request(cfg, {5, 9, 3});
  InfinityRunOptions opt;
  const GenerateResult a = infinity_generate(file_model, file_vae, req, opt);
  const GenerateResult b = infinity_generate(rnd_model, rnd_vae, req, opt);
  const GenerateResult c = infinity_generate(file_model, file_vae, req, opt);
  ASSERT_EQ(a.tokens.size(), 7u);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.tokens, c.tokens);
  EXPECT_EQ(a.images.shape(), Shape({3, 3, 64, 64}));
  EXPECT_EQ(test::max_abs_diff(a.images, b.images), 0.0);
  EXPECT_EQ(a.tokens[6].size(), static_cast<size_t>(3 * 256 * cfg.d_vae()));
  // not all bits equal: the random model makes a non-trivial image
  int64_t ones = 0;
  for (int64_t v : a.tokens[6]) ones += v;
  EXPECT_GT(ones, 0);
  EXPECT_LT(ones, static_cast<int64_t>(a.tokens[6].size()));

  // The same image id gives the same bits whatever the batch it is in.
  InfinityRequest one = req;
  one.text = slice_infinity_text(req.text, 1, 2);
  one.image_ids = {1};
  const GenerateResult d = infinity_generate(file_model, file_vae, one, opt);
  int64_t same = 0, total = 0;
  for (size_t si = 0; si < a.tokens.size(); ++si) {
    const size_t per = d.tokens[si].size();
    for (size_t j = 0; j < per; ++j) {
      same += d.tokens[si][j] == a.tokens[si][per + j];
      ++total;
    }
  }
  EXPECT_EQ(same, total);

  // Teacher forcing with the run's own bits reproduces bits and image.
  std::vector<std::vector<uint8_t>> teacher;
  for (const auto& s : a.tokens) teacher.emplace_back(s.begin(), s.end());
  InfinityRunOptions tf;
  tf.teacher = &teacher;
  const GenerateResult e = infinity_generate(file_model, file_vae, req, tf);
  EXPECT_EQ(e.tokens, a.tokens);
  EXPECT_EQ(test::max_abs_diff(e.images, a.images), 0.0);
}

TEST(InfinityModel, SpatialPatchifyRoundTripsAndRuns) {
  std::vector<uint8_t> bits(2 * 3 * 4 * 4 * 5);
  for (size_t i = 0; i < bits.size(); ++i) bits[i] = static_cast<uint8_t>((i * 7 + i / 3) % 2);
  const auto v = infinity_unpatchify_bits(bits, 2, 3, 4, 5);  // [2, 6, 8, 5]
  EXPECT_EQ(infinity_patchify_bits(v, 2, 3, 4, 5), bits);
  // pixel_shuffle: VAE (b, 2y+i, 2x+j, c) = transformer (b, y, x, c*4 + i*2 + j)
  EXPECT_EQ(v[((1 * 6 + 2 * 2 + 1) * 8 + 2 * 3 + 0) * 5 + 4], bits[((1 * 3 + 2) * 4 + 3) * 20 + 4 * 4 + 1 * 2 + 0]);

  const InfinityConfig cfg = test::tiny_infinity_config(true);
  auto comm = make_local_communicator();
  WeightLoader wm(4, cpu_backend()), wv(5, cpu_backend());
  InfinityModel model(cfg, wm, *comm);
  BsqVae vae(cfg, wv);
  const InfinityRequest req = test::tiny_infinity_request(cfg, {4});
  const GenerateResult a = infinity_generate(model, vae, req, {});
  EXPECT_EQ(a.tokens[6].size(), static_cast<size_t>(256 * 4 * cfg.vae.codebook_dim));
  EXPECT_EQ(a.images.shape(), Shape({1, 3, 128, 128}));  // 16x16 tokens, 2x2 patchify, VAE patch 4
  std::vector<std::vector<uint8_t>> teacher;
  for (const auto& s : a.tokens) teacher.emplace_back(s.begin(), s.end());
  InfinityRunOptions tf;
  tf.teacher = &teacher;
  const GenerateResult b = infinity_generate(model, vae, req, tf);
  EXPECT_EQ(test::max_abs_diff(a.images, b.images), 0.0);
}

TEST(InfinityModel, NonSquareAspectRatiosGenerate) {
  const InfinityConfig cfg = test::tiny_infinity_config();
  auto comm = make_local_communicator();
  WeightLoader wm(31, cpu_backend()), wv(32, cpu_backend());
  InfinityModel model(cfg, wm, *comm);
  BsqVae vae(cfg, wv);
  for (double r : {0.5, 1.333}) {
    InfinityRequest req = test::tiny_infinity_request(cfg, {4});
    req.schedule = infinity_schedule_for(r, 256);
    InfinityRunOptions o;
    const GenerateResult a = infinity_generate(model, vae, req, o);
    const auto& last = req.schedule[req.schedule.num_scales() - 1];
    EXPECT_EQ(a.images.shape(), Shape({1, 3, last.h * 4, last.w * 4})) << "h/w " << r;
    EXPECT_EQ(a.tokens.back().size(), static_cast<size_t>(last.h * last.w * cfg.d_vae()));
  }
}

TEST(InfinityModel, TensorParallelOverTwoRanksMatchesOneRank) {
  InfinityConfig cfg = test::tiny_infinity_config();
  cfg.num_heads = 4;  // 2 heads per rank, head_dim 16
  auto comm = make_local_communicator();
  WeightLoader wm(12, cpu_backend()), wv(13, cpu_backend());
  InfinityModel model(cfg, wm, *comm);
  BsqVae vae(cfg, wv);
  const InfinityRequest req = test::tiny_infinity_request(cfg, {6, 2});
  LogitRecorder ref;
  InfinityRunOptions o;
  o.observer = &ref;
  const GenerateResult a = infinity_generate(model, vae, req, o);
  std::vector<std::vector<uint8_t>> teacher;
  for (const auto& s : a.tokens) teacher.emplace_back(s.begin(), s.end());

  // Two ranks behind a communicator that claims device buffers (as NCCL): the model's all-reduces
  // must come as tensors and the bit broadcast as host memory, or it throws.
  LogitRecorder got[2];
  test::ThreadGroup g(2);
  g.run([&](int r, Communicator& comm) {
    test::DeviceClaimingComm pc(comm);
    WeightLoader wm2(12, cpu_backend()), wv2(13, cpu_backend());
    InfinityModel m(cfg, wm2, pc);
    EXPECT_EQ(m.local_heads(), 2);
    BsqVae v(cfg, wv2);
    InfinityRunOptions tp;
    tp.teacher = &teacher;
    tp.observer = &got[r];
    tp.decode = false;
    infinity_generate(m, v, req, tp);
    EXPECT_GT(pc.tensor_calls, 0);
    EXPECT_GT(pc.host_calls, 0);
  });
  for (int r = 0; r < 2; ++r) {
    ASSERT_EQ(got[r].logits.size(), ref.logits.size());
    for (size_t si = 0; si < ref.logits.size(); ++si) EXPECT_LT(test::max_abs_diff(got[r].logits[si], ref.logits[si]), 1e-4);
  }
  // A size that does not divide the heads names the valid ones.
  class Three final : public Communicator {
   public:
    int rank() const override { return 0; }
    int size() const override { return 3; }
    std::string name() const override { return "three"; }
    void all_reduce_sum(void*, size_t, DType) override {}
    void all_gather(const void*, void*, size_t, DType) override {}
    void broadcast(void*, size_t, int) override {}
    void barrier() override {}
  } three;
  try {
    WeightLoader w(1, cpu_backend());
    InfinityModel m(cfg, w, three);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("valid sizes: 1, 2, 4"), std::string::npos) << e.what();
  }
}

// Drift bug (issue 10): Infinity must broadcast rank 0's sampled bits across the TP group as VAR does,
// so ranks can never part ways. Rank 1 samples with another seed here (which alone gives other bits):
// it must still hold rank 0's bits at every scale.
TEST(InfinityModel, TensorParallelRanksFollowRankZerosSampledBits) {
  InfinityConfig cfg = test::tiny_infinity_config();
  cfg.num_heads = 4;
  const InfinityRequest req = test::tiny_infinity_request(cfg, {5, 3});
  auto local = make_local_communicator();
  WeightLoader wm(21, cpu_backend()), wv(22, cpu_backend());
  InfinityModel one(cfg, wm, *local);
  BsqVae vae(cfg, wv);
  InfinityRunOptions o;
  o.decode = false;
  const GenerateResult ref = infinity_generate(one, vae, req, o);
  InfinityRequest other = req;
  other.seed = req.seed + 1;
  ASSERT_NE(infinity_generate(one, vae, other, o).tokens, ref.tokens) << "the seeds must sample different bits";

  std::vector<GenerateResult> got(2);
  test::ThreadGroup g(2);
  g.run([&](int r, Communicator& comm) {
    WeightLoader wm2(21, cpu_backend()), wv2(22, cpu_backend());
    InfinityModel m(cfg, wm2, comm);
    BsqVae v(cfg, wv2);
    got[r] = infinity_generate(m, v, r == 0 ? req : other, o);
  });
  ASSERT_EQ(got[0].tokens.size(), ref.tokens.size());
  EXPECT_EQ(got[1].tokens, got[0].tokens) << "rank 1 kept its own samples instead of rank 0's";
}

// The engine's use of InfinityGeneration: three requests with their own prompts (1 to 3 images of
// different text lengths), seeds, schedules (square, 1:2 and 4:3), CFG (none; per scale on the logits
// with tau 0.9; on the last block's output) and KV policies (full, ScaleKV and PyramidKV at 64 tokens
// per layer) join a running batch at different steps (request 2 when request 1 is at scale 2, request 3
// one step later), are stepped together as one packed pass per step (rows, scales and text lengths all
// differ within a step) and leave when done. Each must get exactly the bits of its run alone
// (infinity_generate) and its images within 1/255. The model has a learned cross-attention gate
// (ca_gamma), the one gate the packed pass applies to all tokens at once.
TEST(InfinityModel, GenerationsSteppedTogetherMatchRunsAlone) {
  InfinityConfig cfg = test::tiny_infinity_config();
  cfg.cross_attn_layer_scale = 1.0f;
  auto comm = make_local_communicator();
  WeightLoader wm(41, cpu_backend()), wv(42, cpu_backend());
  InfinityModel model(cfg, wm, *comm);
  BsqVae vae(cfg, wv);
  struct Job {
    InfinityRequest req;
    std::string policy;
    int joins_at_step = 0;
  };
  std::vector<Job> jobs(3);
  jobs[0].req = test::tiny_infinity_request(cfg, {5, 3}, 1);
  jobs[0].req.cfg_list = {1.0};
  jobs[0].policy = "full";
  jobs[1].req = test::tiny_infinity_request(cfg, {7}, 2);
  jobs[1].req.schedule = infinity_schedule_for(0.5, 256);
  jobs[1].req.cfg_list = {1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0};  // one per scale
  jobs[1].req.tau_list = {0.9};
  jobs[1].req.seed = 7;
  jobs[1].policy = "scalekv";
  jobs[1].joins_at_step = 2;
  jobs[2].req = test::tiny_infinity_request(cfg, {2, 9, 4}, 3);
  jobs[2].req.schedule = infinity_schedule_for(1.333, 256);
  jobs[2].req.cfg_list = {2.5};
  jobs[2].req.cfg_insertion_layer = {-1};
  jobs[2].req.sampling.top_k = 1;
  jobs[2].req.seed = 99;
  jobs[2].policy = "pyramidkv";
  jobs[2].joins_at_step = 3;
  auto policy = [&](const Job& j) {
    KVOptions o;
    o.policy = j.policy;
    if (j.policy != "full") o.budget = "64";
    return make_kv_policy(o, {cfg.depth, cfg.num_heads, j.req.schedule});
  };
  std::vector<GenerateResult> alone;
  for (const Job& j : jobs) {
    auto p = policy(j);
    InfinityRunOptions o;
    o.policy = p.get();
    alone.push_back(infinity_generate(model, vae, j.req, o));
  }

  std::vector<std::unique_ptr<KVPolicy>> policies;
  // One page pool for every request, as in the engine (it outlives their caches).
  KVPagePool pages(model.backend());
  std::vector<std::pair<size_t, std::unique_ptr<InfinityGeneration>>> running;  // (job, generation)
  std::vector<GenerateResult> together(jobs.size());
  size_t widest = 0;
  for (int step = 0; step == 0 || !running.empty(); ++step) {
    for (size_t i = 0; i < jobs.size(); ++i)
      if (jobs[i].joins_at_step == step) {
        if (i == 1) {
          EXPECT_EQ(running.at(0).second->scales_done(), 2);
        }
        policies.push_back(policy(jobs[i]));
        InfinityRunOptions o;
        o.policy = policies.back().get();
        running.emplace_back(i, std::make_unique<InfinityGeneration>(model, vae, jobs[i].req, o, &pages));
      }
    std::vector<InfinityGeneration*> batch;
    for (auto& [i, g] : running) batch.push_back(g.get());
    InfinityGeneration::step(batch);
    widest = std::max(widest, batch.size());
    for (auto it = running.begin(); it != running.end();) {
      if (it->second->done()) {
        together[it->first] = it->second->finish();
        it = running.erase(it);
      } else {
        ++it;
      }
    }
  }
  EXPECT_EQ(widest, 3u);
  for (size_t i = 0; i < jobs.size(); ++i) {
    const Schedule& sched = jobs[i].req.schedule;
    EXPECT_EQ(together[i].tokens, alone[i].tokens) << "request " << i + 1 << " (" << jobs[i].policy << ")";
    ASSERT_EQ(together[i].images.shape(), alone[i].images.shape());
    EXPECT_LE(test::max_abs_diff(together[i].images, alone[i].images), 1.0 / 255) << "request " << i + 1;
    ASSERT_EQ(together[i].timings.size(), static_cast<size_t>(sched.num_scales()));
    const int64_t stored = alone[i].timings.back().kv_store_tokens, full = cfg.depth * sched.cached_before_last();
    if (jobs[i].policy == "full")
      EXPECT_EQ(stored, full);
    else
      EXPECT_LT(stored, full) << jobs[i].policy << " at 64 tokens per layer must hold fewer tokens than the full cache";
  }
}

// A packed step under tensor parallelism: two requests (different schedules and text) stepped together
// on two ranks make one all-reduce per sub-block (self-attention, cross-attention, FFN) for both and one
// broadcast of both requests' bits per step; rank 1, sampling with other seeds, holds rank 0's bits.
TEST(InfinityModel, TensorParallelStepReducesAndBroadcastsOncePerStep) {
  InfinityConfig cfg = test::tiny_infinity_config();
  cfg.num_heads = 4;
  std::vector<InfinityRequest> reqs = {test::tiny_infinity_request(cfg, {5, 3}, 1),
                                       test::tiny_infinity_request(cfg, {4}, 2)};
  reqs[1].schedule = infinity_schedule_for(0.5, 256);
  std::vector<std::vector<std::vector<std::vector<int64_t>>>> tokens(2);  // [rank][request]
  std::vector<int> steps(2), tensor_calls(2), host_calls(2);
  test::ThreadGroup g(2);
  g.run([&](int r, Communicator& comm) {
    test::DeviceClaimingComm dc(comm);
    WeightLoader wm(21, cpu_backend()), wv(22, cpu_backend());
    InfinityModel m(cfg, wm, dc);
    BsqVae v(cfg, wv);
    InfinityRunOptions o;
    o.decode = false;
    std::vector<std::unique_ptr<InfinityGeneration>> gens;
    for (InfinityRequest q : reqs) {
      q.seed += static_cast<uint64_t>(r);  // rank 1 would sample other bits
      gens.push_back(std::make_unique<InfinityGeneration>(m, v, q, o));
    }
    for (; !gens[0]->done() || !gens[1]->done(); ++steps[r]) {
      std::vector<InfinityGeneration*> batch;
      for (size_t i = 0; i < gens.size(); ++i)  // request i joins at step i
        if (!gens[i]->done() && steps[r] >= static_cast<int>(i)) batch.push_back(gens[i].get());
      InfinityGeneration::step(batch);
    }
    for (auto& gen : gens) tokens[r].push_back(gen->finish().tokens);
    tensor_calls[r] = dc.tensor_calls;
    host_calls[r] = dc.host_calls;
  });
  EXPECT_EQ(steps[0], 8);
  EXPECT_EQ(tokens[1], tokens[0]) << "rank 1 kept its own samples instead of rank 0's";
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(tensor_calls[r], steps[0] * cfg.depth * 3) << "rank " << r;
    EXPECT_EQ(host_calls[r], steps[0]) << "rank " << r;
  }
}

TEST(InfinityModel, CfgVariantsAndTextErrors) {
  const InfinityConfig cfg = test::tiny_infinity_config();
  auto comm = make_local_communicator();
  WeightLoader wm(21, cpu_backend()), wv(22, cpu_backend());
  InfinityModel model(cfg, wm, *comm);
  BsqVae vae(cfg, wv);
  InfinityRequest req = test::tiny_infinity_request(cfg, {3, 4});
  InfinityRunOptions o;
  o.decode = false;
  const GenerateResult base = infinity_generate(model, vae, req, o);
  InfinityRequest nocfg = req;  // cfg 1 everywhere: no unconditional rows at all
  nocfg.cfg_list = {1.0f};
  const GenerateResult a = infinity_generate(model, vae, nocfg, o);
  InfinityRequest layer = req;  // CFG on the last block's output instead of the logits
  layer.cfg_insertion_layer = {-1};
  const GenerateResult b = infinity_generate(model, vae, layer, o);
  EXPECT_NE(a.tokens, base.tokens);
  EXPECT_NE(b.tokens, base.tokens);
  InfinityRequest greedy = req;
  greedy.sampling.top_k = 1;
  greedy.tau_list = {0.5f};
  LogitRecorder rec;
  o.observer = &rec;
  const GenerateResult g = infinity_generate(model, vae, greedy, o);
  for (size_t si = 0; si < g.tokens.size(); ++si)
    for (size_t p = 0; p < g.tokens[si].size(); ++p)
      ASSERT_EQ(g.tokens[si][p], rec.logits[si].f32()[2 * p + 1] > rec.logits[si].f32()[2 * p] ? 1 : 0);
  o.observer = nullptr;

  InfinityRequest longp = test::tiny_infinity_request(cfg, {cfg.text_maxlen + 1});
  try {
    infinity_generate(model, vae, longp, o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("1 to 16"), std::string::npos) << e.what();
  }
  InfinityRequest wide = req;
  wide.text = test::random_text({3, 4}, cfg.text_channels + 8, 1);
  EXPECT_THROW(infinity_generate(model, vae, wide, o), Error);
  InfinityRequest bad_layer = req;
  bad_layer.cfg_insertion_layer = {1};
  EXPECT_THROW(infinity_generate(model, vae, bad_layer, o), Error);
}

TEST(InfinityText, FileRoundTripAndErrors) {
  TempDir t;
  const InfinityText text = test::random_text({2, 5}, 16, 4);
  const std::string p = t.dir + "/prompts.safetensors";
  save_infinity_text(p, text, {"a cat", "a dog"});
  std::vector<std::string> prompts;
  const InfinityText back = load_infinity_text(p, 16, &prompts);
  EXPECT_EQ(back.lens, text.lens);
  EXPECT_EQ(test::max_abs_diff(back.kv_compact, text.kv_compact), 0.0);
  EXPECT_EQ(prompts, (std::vector<std::string>{"a cat", "a dog"}));
  try {
    load_infinity_text(p, 32);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("text_channels"), std::string::npos) << e.what();
  }
  InfinityText bad = text;
  bad.lens = {2, 4};
  save_infinity_text(p, bad);
  try {
    load_infinity_text(p, 16);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sums to 6"), std::string::npos) << e.what();
  }
  const InfinityText s = slice_infinity_text(text, 1, 2);
  EXPECT_EQ(s.lens, std::vector<int64_t>{5});
  EXPECT_EQ(s.kv_compact.dim(0), 5);
  EXPECT_EQ(s.kv_compact.f32()[0], text.kv_compact.f32()[2 * 16]);
}

}  // namespace skv
