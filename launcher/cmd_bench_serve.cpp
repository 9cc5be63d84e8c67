// cmd_bench_serve.cpp - `scalekv bench serve`: replays an arrival trace against the engine in one
// process (or an mpirun job: one tensor-parallel group, or data-parallel replicas of --tp ranks, which
// take the trace's requests in turn, request i on replica i % replicas, as a round-robin balancer would)
// and reports throughput, latency, queue time, concurrency and the measured KV peak against the cap. Request i is one image: label i of --labels (VAR)
// or prompt i of --text-embeddings (Infinity), image id i and --seed S, so its PNG (DIR/NNNN_cC.png or
// DIR/NNNN.png) equals image i of `scalekv generate` with the same labels or prompts and seed. Arrivals are
// Poisson at --rate requests per second (0: all at once), timed from the first; rank 0 queues those at the
// start before the engine's first iteration and a thread submits each later one at its time (open loop:
// arrivals never wait for the engine).
#include <fmt/core.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <map>
#include <numeric>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "engine/engine.h"
#include "engine/infinity_family.h"
#include "engine/var_family.h"
#include "launcher/bench.h"
#include "launcher/bench_serve.h"
#include "launcher/context.h"
#include "launcher/generate_output.h"
#include "launcher/kv_options.h"
#include "launcher/model_files.h"
#include "launcher/progress.h"
#include "launcher/request_check.h"
#include "parallel/communicator.h"
#include "runtime/check.h"
#include "runtime/file_io.h"
#include "runtime/models/infinity_text.h"
#include "runtime/models/model_bundle.h"
#include "runtime/models/request_kv.h"

namespace skv {

namespace {

struct ServeBenchArgs {
  ModelFiles files;
  bool random = false;
  int depth = 0;
  std::string labels = "0-9x4";
  std::string text_embeddings;  // Infinity: one request per prompt
  int resolution = 0;           // Infinity: 0 = the config's
  double h_div_w = 0;           // Infinity: 0 = the config's
  std::string seed_text = "0";
  double rate = 0;
  std::string mode = "continuous";
  std::string kv_memory, device_memory;
  int64_t max_step_tokens = 0;
  double cfg = -1;  // < 0: the model's
  int top_k = -1;
  double top_p = -1;
  std::string out, json;
  ContextArgs ctx;
  KVOptions kv;
  std::set<std::string> given;
  std::string command;
};

// Linear interpolation between closest ranks (numpy's default percentile).
double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = p / 100.0 * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos)), hi = std::min(v.size() - 1, lo + 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

void run_bench_serve(ServeBenchArgs& a) {
  const uint64_t seed = parse_seed(a.seed_text, "--seed");
  SKV_CHECK(std::isfinite(a.rate) && a.rate >= 0, "--rate {} must be >= 0 requests per second (0: all at once)", a.rate);
  EngineOptions eo = parse_engine_options(a.mode, a.kv_memory, a.max_step_tokens, a.device_memory);
  SKV_CHECK(!a.given.count("--depth") || (a.random && a.depth >= 1), "--depth {} needs --random-weights and must be "
            ">= 1", a.depth);
  check_kv_options(a.kv);
  if (!a.out.empty()) prepare_output_dir(a.out, "--out");

  SKV_CHECK(a.cfg < 0 || (std::isfinite(a.cfg) && a.cfg <= 100), "--cfg {} must be in [0, 100]", a.cfg);
  SKV_CHECK(a.top_p < 0 || a.top_p <= 1, "--top-p {} must be in [0, 1]", a.top_p);
  RunContext ctx = make_context(a.ctx);
  check_same_request(ctx, {{"--labels / --text-embeddings", a.labels + " " + a.text_embeddings}, {"--seed", std::to_string(seed)}, {"--rate", fmt::format("{}", a.rate)},
                           {"--mode", a.mode}, {"--kv-memory / --device-memory", a.kv_memory + " " + a.device_memory},
                           {"--cfg / --top-k / --top-p", fmt::format("{} {} {}", a.cfg, a.top_k, a.top_p)},
                           {"--kv-policy / --kv-budget", a.kv.policy + " " + a.kv.budget}});
  Backend& be = *ctx.backend;
  ModelFiles files = a.files;
  SKV_CHECK(!a.random || !files.config.empty(), "--random-weights needs --model CONFIG.json (the shape to fill)");
  if (!a.random) files = resolve_model_files(files);
  const std::string family_name = model_family(files.config);
  // The model, its family, and one request per image: label i (VAR) or prompt i (Infinity), image id i.
  std::unique_ptr<VarBundle> var;
  std::unique_ptr<InfinityBundle> inf;
  std::unique_ptr<EngineFamily> family;
  std::vector<int64_t> labels;
  int64_t n = 0;
  const WeightSource src = a.random ? WeightSource::random_weights(1) : WeightSource::files(files.weights, files.vae);
  if (family_name == "var") {
    SKV_CHECK(a.text_embeddings.empty() && !a.given.count("--resolution") && !a.given.count("--h-div-w"),
              "--text-embeddings, --resolution and --h-div-w are for Infinity models; {} is a VAR model (drop them)",
              files.config);
    VarConfig cfg = VarConfig::load(files.config);
    if (a.depth > 0) cfg.depth = a.depth;
    var = load_var(std::move(cfg), src, be, *ctx.tp);
    labels = parse_labels(a.labels, var->cfg.num_classes);
    n = static_cast<int64_t>(labels.size());
    family = std::make_unique<VarFamily>(*var->model, *var->vae);
  } else if (family_name == "infinity") {
    SKV_CHECK(!a.text_embeddings.empty() && !a.given.count("--labels"), "an Infinity model's requests are the prompts "
              "of --text-embeddings FILE (scripts/encode_prompts.py or `scalekv encode-text`), not --labels");
    InfinityConfig cfg = InfinityConfig::load(files.config);
    if (a.depth > 0) cfg.depth = a.depth;
    InfinityText text = load_infinity_text(a.text_embeddings, cfg.text_channels);
    n = static_cast<int64_t>(text.lens.size());
    const Schedule sched = infinity_schedule_for(a.h_div_w > 0 ? a.h_div_w : cfg.h_div_w,
                                                 a.resolution > 0 ? a.resolution : cfg.resolution);
    inf = load_infinity(std::move(cfg), src, be, *ctx.tp);
    family = std::make_unique<InfinityFamily>(*inf->model, *inf->vae, infinity_request_defaults(inf->cfg, sched),
                                              std::move(text));
  } else {
    SKV_FAIL("{}: bench serve runs VAR and Infinity models, not the '{}' family", files.config, family_name);
  }
  const std::string model_path = var ? var->cfg.path : inf->cfg.path;
  const int depth = var ? var->cfg.depth : inf->cfg.depth;

  std::vector<double> arrival(static_cast<size_t>(n), 0.0);  // seconds after the start
  if (a.rate > 0) {
    std::mt19937_64 gen(seed ^ 0x5eedULL);
    std::exponential_distribution<double> gap(a.rate);
    double t = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (i > 0) t += gap(gen);
      arrival[static_cast<size_t>(i)] = t;
    }
  }
  auto make_request = [&](int64_t i) {
    EngineRequest r;
    r.id = i;
    if (var)
      r.labels = {labels[static_cast<size_t>(i)]};
    else
      r.prompts = {i};
    r.image_ids = {static_cast<uint32_t>(i)};
    r.seed = seed;
    r.cfg = a.cfg;
    r.top_k = a.top_k;
    r.top_p = a.top_p;
    r.kv = a.kv;
    r.kv.given.clear();  // checked once above: no per-request warnings
    return r;
  };

  // This replica's requests: i % replicas == replica (all of them with one replica).
  const int R = ctx.replicas;
  std::vector<int64_t> mine;
  for (int64_t i = ctx.replica; i < n; i += R) mine.push_back(i);
  Communicator& control = ctx.tp_host ? *ctx.tp_host : *ctx.tp;
  const bool out_rank = ctx.is_output_rank();
  Progress prog("bench serve");
  eo.on_progress = [&](const EngineProgress& p) {
    if (out_rank)
      prog.update(fmt::format("{}{}/{} images  {} in flight  iteration {}  {:.3f}s",
                              R > 1 ? fmt::format("replica {}: ", ctx.replica) : "", p.finished, mine.size(),
                              p.in_flight, p.iteration, p.step_seconds));
  };
  Engine engine(*family, be, *ctx.tp, control, eo);
  if (out_rank && !mine.empty()) {  // a request that could never fit is refused before the clock starts (all alike)
    const std::string why = engine.never_fits(make_request(mine[0]));
    SKV_CHECK(why.empty(), "{}: a request ({} policy) can never run: {}", memory_options(a.kv_memory, a.device_memory),
              a.kv.policy, why);
  }

  ImageOutput out(a.out, static_cast<int64_t>(mine.size()));
  // Per request (global index), filled by the output rank of the replica that ran it, in nanoseconds:
  // latency, queue time, finish time after t0 (summed over the world below: one replica fills each).
  std::vector<int64_t> ns(3 * static_cast<size_t>(n), 0);
  std::atomic<bool> failed{false};
  std::string feeder_error;
  std::mutex feed_mu;
  std::condition_variable feed_cv;
  bool stop_feeding = false;  // the engine failed: the feeder stops waiting for the next arrival
  if (ctx.world) ctx.world->barrier();  // replicas start their clocks together
  const double t0 = now_seconds();
  std::thread feeder;
  if (ctx.tp->rank() == 0) {
    // Arrivals at the start (every one with --rate 0) are queued before the engine's first iteration, so a
    // burst is admitted as one, as `scalekv plan --kv-memory` replays it, not as fast as a thread submits.
    size_t later = 0;
    try {
      while (later < mine.size() && arrival[static_cast<size_t>(mine[later])] <= 0) engine.submit(make_request(mine[later++]));
    } catch (const std::exception& e) {
      feeder_error = e.what();
      failed = true;
      later = mine.size();
    }
    feeder = std::thread([&, later] {
      try {
        for (size_t k = later; k < mine.size(); ++k) {
          const int64_t i = mine[k];
          std::unique_lock<std::mutex> lk(feed_mu);
          const auto at = std::chrono::steady_clock::now() +
                          std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                              std::chrono::duration<double>(t0 + arrival[static_cast<size_t>(i)] - now_seconds()));
          if (feed_cv.wait_until(lk, at, [&] { return stop_feeding; })) break;
          lk.unlock();
          engine.submit(make_request(i));
        }
      } catch (const std::exception& e) {
        feeder_error = e.what();
        failed = true;
      }
      engine.close();
    });
  }
  auto to_ns = [](double s) { return static_cast<int64_t>(std::llround(s * 1e9)); };
  try {
    engine.run([&](EngineResult&& r) {
      if (!out_rank) return;
      const size_t k = 3 * static_cast<size_t>(r.id);
      ns[k] = to_ns(r.finished - r.submitted);
      ns[k + 1] = to_ns(r.admitted - r.submitted);
      ns[k + 2] = std::max<int64_t>(1, to_ns(r.finished - t0));  // 0 marks "not finished"
      if (a.out.empty()) return;
      const std::string name = var ? fmt::format("{:04d}_c{}.png", r.id, labels[static_cast<size_t>(r.id)])
                                   : fmt::format("{:04d}.png", r.id);  // generate's names
      out.write_png(name, r.rgb[0].data(), r.width, r.height);
    });
  } catch (...) {
    if (feeder.joinable()) {
      {
        std::lock_guard<std::mutex> lk(feed_mu);
        stop_feeding = true;
      }
      feed_cv.notify_all();
      feeder.join();
    }
    throw;
  }
  if (feeder.joinable()) feeder.join();
  SKV_CHECK(!failed, "bench serve: submitting a request failed: {}", feeder_error);
  EngineStats s = engine.stats();
  SKV_CHECK(!out_rank || s.finished == static_cast<int64_t>(mine.size()), "bench serve: {} of {} requests finished",
            s.finished, mine.size());
  if (out_rank) prog.done(fmt::format("{} images", mine.size()));
  {  // the replica's measured peak of all bytes is its largest rank's
    std::vector<int64_t> mem(static_cast<size_t>(control.size()), 0);
    mem[static_cast<size_t>(control.rank())] = s.memory_peak_bytes;
    if (control.size() > 1) control.all_reduce_sum_host(mem.data(), mem.size(), DType::I64);
    s.memory_peak_bytes = *std::max_element(mem.begin(), mem.end());
  }
  // Replicas: world rank 0 gathers every request's times and each replica's engine figures.
  // max_in_flight, iterations, kv_peak, kv_cap, memory_peak, memory_cap, resident, memory_planned_peak,
  // kv_pages_allocated, kv_pool_peak
  constexpr size_t kPer = 10;
  std::vector<int64_t> per(kPer * static_cast<size_t>(R), 0);
  if (out_rank) {
    const size_t k = kPer * static_cast<size_t>(ctx.replica);
    per[k] = s.max_in_flight;
    per[k + 1] = s.iterations;
    per[k + 2] = s.kv_peak_bytes;
    per[k + 3] = s.kv_cap_bytes;
    per[k + 4] = s.memory_peak_bytes;
    per[k + 5] = s.memory_cap_bytes;
    per[k + 6] = s.resident_bytes;
    per[k + 7] = s.memory_planned_peak_bytes;
    per[k + 8] = s.kv_pages_allocated;
    per[k + 9] = s.kv_pool_peak_bytes;
  }
  if (R > 1) {
    ctx.world->all_reduce_sum_host(ns.data(), ns.size(), DType::I64);
    ctx.world->all_reduce_sum_host(per.data(), per.size(), DType::I64);
  }
  if (ctx.world_rank != 0) return;
  std::vector<double> latency, queue;
  double seconds = 0;
  for (int64_t i = 0; i < n; ++i) {
    const size_t k = 3 * static_cast<size_t>(i);
    SKV_CHECK(ns[k + 2] > 0, "bench serve: request {} never finished", i);
    latency.push_back(static_cast<double>(ns[k]) * 1e-9);
    queue.push_back(static_cast<double>(ns[k + 1]) * 1e-9);
    seconds = std::max(seconds, static_cast<double>(ns[k + 2]) * 1e-9);
  }
  // The job's figures: in-flight requests add up over replicas (the sum of their maxima bounds the job's);
  // the KV peak and cap are per rank, so the largest replica's.
  s.max_in_flight = s.iterations = s.kv_peak_bytes = s.kv_cap_bytes = 0;
  s.memory_peak_bytes = s.memory_cap_bytes = s.resident_bytes = s.memory_planned_peak_bytes = 0;
  s.kv_pages_allocated = s.kv_pool_peak_bytes = 0;
  nlohmann::json replicas = nlohmann::json::array();
  for (int q = 0; q < R; ++q) {
    const size_t k = kPer * static_cast<size_t>(q);
    s.max_in_flight += per[k];
    s.iterations = std::max(s.iterations, per[k + 1]);
    s.kv_peak_bytes = std::max(s.kv_peak_bytes, per[k + 2]);
    s.kv_cap_bytes = std::max(s.kv_cap_bytes, per[k + 3]);
    s.memory_peak_bytes = std::max(s.memory_peak_bytes, per[k + 4]);
    s.memory_cap_bytes = std::max(s.memory_cap_bytes, per[k + 5]);
    s.resident_bytes = std::max(s.resident_bytes, per[k + 6]);
    s.memory_planned_peak_bytes = std::max(s.memory_planned_peak_bytes, per[k + 7]);
    s.kv_pages_allocated = std::max(s.kv_pages_allocated, per[k + 8]);
    s.kv_pool_peak_bytes = std::max(s.kv_pool_peak_bytes, per[k + 9]);
    replicas.push_back({{"replica", q}, {"max_in_flight", per[k]}, {"iterations", per[k + 1]},
                        {"kv_peak_bytes", per[k + 2]}, {"kv_cap_bytes", per[k + 3]}, {"memory_peak_bytes", per[k + 4]},
                        {"kv_pages_allocated", per[k + 8]}, {"kv_pool_peak_bytes", per[k + 9]}});
  }

  nlohmann::json j;
  j["command"] = a.command;
  j["machine"] = machine_description();
  j["model"] = model_path;
  j["family"] = family_name;
  j["weights"] = a.random ? "random" : files.weights;
  j["depth"] = depth;
  j["tp"] = ctx.tp->size();
  j["replicas"] = R;
  j["per_replica"] = replicas;
  j["cfg"] = a.cfg;
  j["top_k"] = a.top_k;
  j["top_p"] = a.top_p;
  j["backend"] = be.name();
  j["mode"] = batch_mode_name(eo.mode);
  j["kv_policy"] = a.kv.policy;
  j["kv_budget"] = a.kv.budget;
  j["rate"] = a.rate;
  j["images"] = n;
  j["seconds"] = seconds;
  j["images_per_s"] = seconds > 0 ? static_cast<double>(n) / seconds : 0.0;
  j["latency_p50_s"] = percentile(latency, 50);
  j["latency_p99_s"] = percentile(latency, 99);
  j["latency_mean_s"] = latency.empty() ? 0.0 : std::accumulate(latency.begin(), latency.end(), 0.0) / latency.size();
  j["queue_p50_s"] = percentile(queue, 50);
  j["queue_p99_s"] = percentile(queue, 99);
  j["max_in_flight"] = s.max_in_flight;
  j["iterations"] = s.iterations;
  j["kv_peak_bytes"] = s.kv_peak_bytes;
  j["kv_cap_bytes"] = s.kv_cap_bytes;
  // The rank's KV page pool (the largest replica's): the pages it took from the allocator over the run (pages
  // given back by finished requests and taken by the next are counted once) and the most bytes it held at once.
  j["kv_pages_allocated"] = s.kv_pages_allocated;
  j["kv_pool_peak_bytes"] = s.kv_pool_peak_bytes;
  j["max_step_tokens"] = eo.limits.max_step_tokens;
  if (eo.device_memory_bytes > 0) {  // what --device-memory left, and the measured peak of every byte (per rank)
    j["device_memory_bytes"] = eo.device_memory_bytes;
    j["resident_bytes"] = s.resident_bytes;
    j["memory_cap_bytes"] = s.memory_cap_bytes;
    j["memory_peak_bytes"] = s.memory_peak_bytes;
    j["memory_planned_peak_bytes"] = s.memory_planned_peak_bytes;  // the largest reservation of one iteration
  }
  fmt::print("bench serve ({} mode, {}{}, rate {}/s, KV cap {}{}): {} images in {:.2f} s, {:.3f} images/s, latency p50 "
             "{:.2f} s p99 {:.2f} s, queue p50 {:.2f} s, at most {} in flight, KV peak {} ({:.0f}% of the cap){}\n",
             batch_mode_name(eo.mode), a.kv.policy, a.kv.budget.empty() ? "" : " " + a.kv.budget, a.rate, format_bytes(s.kv_cap_bytes),
             R > 1 ? fmt::format(" per rank, {} replicas of TP {}", R, ctx.tp->size()) : "", n, seconds,
             j["images_per_s"].get<double>(), j["latency_p50_s"].get<double>(), j["latency_p99_s"].get<double>(),
             j["queue_p50_s"].get<double>(), s.max_in_flight, format_bytes(s.kv_peak_bytes),
             100.0 * static_cast<double>(s.kv_peak_bytes) / static_cast<double>(s.kv_cap_bytes),
             device_memory_summary(s));
  if (!a.json.empty()) write_file_atomic(a.json, j.dump(1) + "\n");
}

}  // namespace

void register_bench_serve(CLI::App* bench) {
  auto a = std::make_shared<ServeBenchArgs>();
  auto* cmd = bench->add_subcommand("serve", "Replay Poisson arrivals against the engine (scale-level batching under "
                                             "a KV cap): throughput, latency, queue time, concurrency, KV peak");
  cmd->add_option("--model", a->files.config, "Model config JSON (default: the demo model)");
  cmd->add_option("--weights", a->files.weights, "Transformer weights (safetensors)");
  cmd->add_option("--vae", a->files.vae, "VAE weights (safetensors)");
  cmd->add_flag("--random-weights", a->random, "Random weights of --model's shape");
  cmd->add_option("--depth", a->depth, "With --random-weights: override the config's depth (for time)");
  cmd->add_option("--labels", a->labels, "VAR: one request per label: 3,7 or 0-9 or 0-9x4")->capture_default_str();
  cmd->add_option("--text-embeddings", a->text_embeddings, "Infinity: one request per prompt of this file");
  cmd->add_option("--resolution", a->resolution, "Infinity: 256, 512, 768 or 1024 (default: the config's)");
  cmd->add_option("--h-div-w", a->h_div_w, "Infinity: aspect ratio height/width (default: the config's)");
  cmd->add_option("--seed", a->seed_text, "Sampling seed (request i is image i of generate --seed S)")
      ->capture_default_str();
  cmd->add_option("--rate", a->rate, "Poisson arrivals per second (0: all at once)")->capture_default_str();
  cmd->add_option("--mode", a->mode, "sequential, static (request-level batches) or continuous (scale-level joins)")
      ->capture_default_str();
  cmd->add_option("--kv-memory", a->kv_memory, "KV cap for the requests in flight (bytes; KiB/MiB/GiB suffixes)");
  cmd->add_option("--device-memory", a->device_memory, "Memory of one device per rank: requests are admitted into "
                                                       "what the model leaves, KV and activations counted");
  cmd->add_option("--max-step-tokens", a->max_step_tokens, "Bound on one iteration's query tokens (0: none)")
      ->capture_default_str();
  cmd->add_option("--cfg", a->cfg, "Classifier-free guidance scale of every request (default: the model's)");
  cmd->add_option("--top-k", a->top_k, "Top-k sampling of every request (default: the model's)");
  cmd->add_option("--top-p", a->top_p, "Top-p sampling of every request (default: the model's)");
  cmd->add_option("--out", a->out, "Write each request's PNG here (NNNN_cC.png)");
  cmd->add_option("--json", a->json, "Write the summary as JSON here");
  add_context_options(cmd, a->ctx);
  add_kv_options(cmd, a->kv);
  cmd->callback([a, cmd] {
    for (const auto* o : cmd->get_options())
      if (o->count() > 0) a->given.insert(o->get_name());
    a->command = "scalekv bench serve";
    for (const auto* o : cmd->get_options())
      if (o->count() > 0 && !o->get_lnames().empty())
        a->command += o->get_expected_max() == 0 ? fmt::format(" --{}", o->get_lnames()[0])
                                                 : fmt::format(" --{} {}", o->get_lnames()[0], fmt::join(o->results(), ","));
    run_bench_serve(*a);
  });
}

}  // namespace skv
