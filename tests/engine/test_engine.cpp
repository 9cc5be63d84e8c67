// The engine on a tiny random VAR model: requests that join a running batch mid-flight, next to requests
// with other KV policies, get exactly the tokens they get alone (and the same images within one level);
// a burst of 200 requests never passes the KV cap; the three batching modes admit as they say.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "engine/engine.h"
#include "engine/var_family.h"
#include "models/var_test_util.h"
#include "parallel/communicator.h"
#include "runtime/check.h"
#include "runtime/models/weights.h"

namespace skv {

namespace {

struct TinyVar {
  VarConfig cfg = test::tiny_var_config("tiny-engine", 2, {1, 2, 3, 4, 5, 6}, 8);
  std::unique_ptr<Communicator> comm = make_local_communicator();
  WeightLoader wl{5, cpu_backend()};
  VarModel model{cfg, wl, *comm};
  VQVAE vae{cfg, WeightLoader(6, cpu_backend())};
  VarFamily family{model, vae};
};

KVOptions kv(const std::string& policy, const std::string& budget = "") {
  KVOptions o;
  o.policy = policy;
  o.given = {"--kv-policy"};
  if (policy == "scalekv" || policy == "snapkv" || policy == "pyramidkv") {
    o.window = 4;  // the tiny schedule caches 55 tokens before its last scale
    o.given.insert("--kv-window");
  }
  if (!budget.empty()) {
    o.budget = budget;
    o.given.insert("--kv-budget");
  }
  return o;
}

EngineRequest request(int64_t id, std::vector<int64_t> labels, KVOptions o, uint64_t seed = 7) {
  EngineRequest r;
  r.id = id;
  r.labels = std::move(labels);
  for (size_t i = 0; i < r.labels.size(); ++i) r.image_ids.push_back(static_cast<uint32_t>(10 * id + i));
  r.seed = seed;
  r.kv = std::move(o);
  return r;
}

// The request run alone, outside the engine.
GenerateResult alone(TinyVar& m, const EngineRequest& r) {
  auto policy = m.family.make_policy(r);
  VarRunOptions opt;
  opt.policy = policy.get();
  return var_generate(m.model, m.vae, m.family.var_request(r), opt);
}

void expect_same_as_alone(TinyVar& m, const EngineRequest& r, const EngineResult& got) {
  const GenerateResult ref = alone(m, r);
  EXPECT_EQ(got.gen.tokens, ref.tokens) << "request " << r.id << " (" << r.kv.policy << ")";
  const auto rgb = images_to_rgb8(ref.images);
  ASSERT_EQ(got.rgb.size(), rgb.size());
  for (size_t i = 0; i < rgb.size(); ++i) {
    ASSERT_EQ(got.rgb[i].size(), rgb[i].size());
    int worst = 0;
    for (size_t k = 0; k < rgb[i].size(); ++k) worst = std::max(worst, std::abs(got.rgb[i][k] - rgb[i][k]));
    EXPECT_LE(worst, 1) << "request " << r.id << " image " << i;
  }
}

int64_t full_step_bytes(TinyVar& m, int images) {
  const EngineRequest r = request(0, std::vector<int64_t>(static_cast<size_t>(images), 1), kv("full"));
  int64_t most = 0;
  for (const StepDemand& d : m.family.demand(r, *m.family.make_policy(r))) most = std::max(most, d.kv_bytes);
  return most;
}

}  // namespace

TEST(Engine, RequestsRoundTripThroughTheirJson) {
  EngineRequest r = request(42, {3, 1}, kv("scalekv", "20"), 1ull << 60);
  r.cfg = 2.5;
  r.top_k = 3;
  r.top_p = 0.5;
  r.texts = {"a red fox", "caf\xc3\xa9 \"quoted\"\n"};  // Infinity's text prompts travel to every rank as they are
  r.h_div_w = 0.5;
  const EngineRequest b = engine_request_from_json(engine_request_to_json(r));
  EXPECT_EQ(engine_request_to_json(b), engine_request_to_json(r));
  EXPECT_EQ(b.seed, 1ull << 60);
  EXPECT_EQ(b.texts, r.texts);
  EXPECT_EQ(b.h_div_w, 0.5);
  EXPECT_EQ(b.kv.given, r.kv.given);
}

// Four requests with four policies join at iterations 0, 1, 2 and 4 of one running batch.
TEST(Engine, RequestsJoiningMidFlightGetTheTokensTheyGetAlone) {
  TinyVar m;
  const std::vector<EngineRequest> reqs = {request(1, {1}, kv("full")), request(2, {3, 0}, kv("scalekv", "20")),
                                           request(3, {2}, kv("snapkv", "12")),
                                           request(4, {4}, kv("sliding-window", "10"))};
  const std::map<int64_t, size_t> join = {{0, 0}, {1, 1}, {2, 2}, {4, 3}};
  EngineOptions o;
  o.limits.kv_cap_bytes = int64_t{1} << 40;
  Engine* engine = nullptr;
  o.on_boundary = [&](int64_t it) {
    if (join.count(it)) engine->submit(reqs[join.at(it)]);
    if (it == 1) {
      EXPECT_THROW(engine->submit(reqs[0]), Error);  // its id is in flight
    }
    if (it == 4) engine->close();
  };
  Engine e(m.family, cpu_backend(), *m.comm, *m.comm, o);
  engine = &e;
  std::map<int64_t, EngineResult> got;
  e.run([&](EngineResult&& r) { got[r.id] = std::move(r); });
  ASSERT_EQ(got.size(), reqs.size());
  for (const EngineRequest& r : reqs) expect_same_as_alone(m, r, got.at(r.id));
  EXPECT_EQ(e.stats().max_in_flight, 4);
  EXPECT_EQ(got.at(4).steps_in_batch_max, 4);  // it joined at iteration 4, next to requests at scales 4, 3 and 2
  EXPECT_EQ(e.stats().iterations, 4 + 6);
}

// 200 requests at once, every policy, under a cap that holds three full-cache requests of one image.
TEST(Engine, ABurstOf200RequestsStaysUnderTheKVCap) {
  TinyVar m;
  EngineOptions o;
  o.limits.kv_cap_bytes = 3 * full_step_bytes(m, 1);
  Engine e(m.family, cpu_backend(), *m.comm, *m.comm, o);
  const std::vector<KVOptions> policies = {kv("full"), kv("scalekv", "20"), kv("snapkv", "12"),
                                           kv("streamingllm", "10"), kv("pyramidkv", "16"),
                                           kv("sliding-window", "10")};
  std::vector<EngineRequest> reqs;
  for (int i = 0; i < 200; ++i) {
    reqs.push_back(request(i, {i % 5}, policies[static_cast<size_t>(i) % policies.size()], 100 + i));
    e.submit(reqs.back());
  }
  e.close();
  std::map<int64_t, EngineResult> got;
  e.run([&](EngineResult&& r) { got[r.id] = std::move(r); });
  ASSERT_EQ(got.size(), 200u);
  const EngineStats s = e.stats();
  EXPECT_EQ(s.finished, 200);
  EXPECT_EQ(s.cancelled, 0);
  EXPECT_GT(s.kv_peak_bytes, 0);
  EXPECT_LE(s.kv_peak_bytes, o.limits.kv_cap_bytes);
  EXPECT_GT(s.max_in_flight, 3);  // compressed requests fill what three full ones would hold
  // One page pool for all of them: pages a finished request gave back served the next ones (200 requests
  // took at least a page each), and the pages held at once, cached ones included, stayed under the cap.
  EXPECT_GT(s.kv_pages_allocated, 0);
  EXPECT_LT(s.kv_pages_allocated, 100);
  EXPECT_GT(s.kv_pool_peak_bytes, 0);
  EXPECT_LE(s.kv_pool_peak_bytes, s.kv_peak_bytes);
  std::printf("burst: %lld pages taken from the allocator, at most %lld bytes held\n",
              static_cast<long long>(s.kv_pages_allocated), static_cast<long long>(s.kv_pool_peak_bytes));
  for (int i = 0; i < 200; i += 23) expect_same_as_alone(m, reqs[static_cast<size_t>(i)], got.at(i));
}

TEST(Engine, SequentialRunsOneAtATimeAndStaticWaitsForTheWholeBatch) {
  TinyVar m;
  for (const BatchMode mode : {BatchMode::Sequential, BatchMode::Static}) {
    EngineOptions o;
    o.mode = mode;
    o.limits.kv_cap_bytes = 3 * full_step_bytes(m, 1);
    Engine* engine = nullptr;
    o.on_boundary = [&](int64_t it) {  // one arrival per iteration
      if (it < 8) engine->submit(request(it, {it % 5}, kv("full")));
      if (it == 8) engine->close();
    };
    Engine e(m.family, cpu_backend(), *m.comm, *m.comm, o);
    engine = &e;
    std::vector<EngineResult> got;
    e.run([&](EngineResult&& r) { got.push_back(std::move(r)); });
    ASSERT_EQ(got.size(), 8u);
    if (mode == BatchMode::Sequential) {
      EXPECT_EQ(e.stats().max_in_flight, 1);
      EXPECT_EQ(e.stats().iterations, 8 * 6);
    } else {
      EXPECT_EQ(e.stats().max_in_flight, 3);
      for (const auto& a : got)  // a batch is admitted together and nobody joins it
        for (const auto& b : got)
          EXPECT_TRUE(a.admitted == b.admitted || b.admitted >= a.finished || a.admitted >= b.finished)
              << a.id << " and " << b.id;
    }
  }
}

TEST(Engine, ARequestThatCanNeverFitIsRefusedAtOnceAndCancelFreesItsMemory) {
  TinyVar m;
  EngineOptions o;
  o.limits.kv_cap_bytes = full_step_bytes(m, 1);
  Engine e(m.family, cpu_backend(), *m.comm, *m.comm, o);
  try {
    e.submit(request(1, {1, 2}, kv("full")));
    FAIL() << "a request of twice the cap was queued";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("more than the whole KV memory"), std::string::npos) << err.what();
  }
  EXPECT_THROW(e.submit(request(2, {9}, kv("full"))), Error);  // class 9 of 5
  std::vector<int64_t> done;
  bool cancelled = false;
  EngineOptions o2 = o;
  Engine* engine = nullptr;
  o2.on_boundary = [&](int64_t it) {
    if (it == 2) {
      EXPECT_EQ(engine->waiting(), 1);
      engine->cancel(3);  // in flight: leaves at this boundary, 4 takes its memory
      engine->close();
    }
  };
  Engine e2(m.family, cpu_backend(), *m.comm, *m.comm, o2);
  engine = &e2;
  e2.submit(request(3, {1}, kv("full")));
  e2.submit(request(4, {2}, kv("full")));  // waits: 3 holds the whole cap
  e2.run([&](EngineResult&& r) {
    done.push_back(r.id);
    if (r.id == 3) cancelled = r.cancelled;
  });
  EXPECT_EQ(done, (std::vector<int64_t>{3, 4}));
  EXPECT_TRUE(cancelled);
  EXPECT_EQ(e2.stats().iterations, 2 + 6);
  EXPECT_LE(e2.stats().kv_peak_bytes, o.limits.kv_cap_bytes);
}

}  // namespace skv
