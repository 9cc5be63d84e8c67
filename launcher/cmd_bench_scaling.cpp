// cmd_bench_scaling.cpp - `scalekv bench-scaling`: what tensor parallelism costs and saves for one
// model, measured on this job (run it with --tp 1, 2, 4 under mpirun; scripts/bench/scaling.sh does).
// Per run: wall time per image (transformer + decoder), time per scale, the share of the transformer
// time spent inside collectives (waiting for slower ranks included), bytes all-reduced per scale, the
// transformer's CPU seconds per rank (the work each rank did, whatever else shares the machine);
// once: weights resident on each rank (the accounting allocator's Weights bytes, the pages of the
// checkpoint file the rank read, and the process RSS after the checkpoint is unmapped). Prints a table on world rank 0 (median of --runs runs after
// --warmup) and writes the numbers as JSON for the script's summary table. Never asserts a time.
#include <fmt/core.h>
#include <omp.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "launcher/commands.h"
#include "launcher/context.h"
#include "launcher/model_files.h"
#include "runtime/check.h"
#include "runtime/file_io.h"
#include "runtime/models/var_generate.h"
#include "runtime/safetensors.h"

namespace skv {

namespace {

struct ScalingArgs {
  ModelFiles files;
  std::string labels = "0";
  int runs = 3, warmup = 1;
  uint64_t seed = 0;
  std::string json;
  ContextArgs ctx;
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// "VmRSS" / "VmHWM" of /proc/self/status in bytes (0 where unavailable).
int64_t proc_status_bytes(const std::string& key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key + ":", 0) == 0) return std::stoll(line.substr(key.size() + 1)) * 1024;
  return 0;
}

// Resident bytes of this process's mappings of `path` (/proc/self/smaps): the pages of the checkpoint
// this rank actually read, i.e. its shard (rounded out to pages) plus the replicated tensors.
int64_t mapped_resident_bytes(const std::string& path) {
  std::error_code ec;
  const std::string want = std::filesystem::canonical(path, ec).string();
  std::ifstream f("/proc/self/smaps");
  std::string line;
  bool in = false;
  int64_t total = 0;
  while (std::getline(f, line)) {
    if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) && line.find('-') != std::string::npos &&
        line.find(':') > line.find(' ')) {  // a mapping header: "addr-addr perms offset dev inode path"
      in = line.size() >= want.size() && line.compare(line.size() - want.size(), want.size(), want) == 0;
    } else if (in && line.rfind("Rss:", 0) == 0) {
      total += std::stoll(line.substr(4)) * 1024;
    }
  }
  return total;
}

// CPU time of this process (all its threads), seconds.
double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

void run_scaling(const ScalingArgs& a) {
  const ModelFiles f = resolve_model_files(a.files);
  SKV_CHECK(model_family(f.config) == "var", "{}: bench-scaling runs VAR models", f.config);
  if (!a.json.empty()) check_output_file(a.json, "--json");  // before the work, not after it
  const VarConfig cfg = VarConfig::load(f.config);
  RunContext ctx = make_context(a.ctx);
  SKV_CHECK(ctx.replicas == 1, "bench-scaling measures one model: start exactly --tp {} ranks (this job has {})",
            a.ctx.tp, ctx.world_size);
  SKV_CHECK(a.runs >= 1 && a.warmup >= 0, "--runs {} must be >= 1 and --warmup {} >= 0", a.runs, a.warmup);
  Backend& be = *ctx.backend;
  Communicator& tp = *ctx.tp;
  const bool out = ctx.is_output_rank();

  const int64_t w0 = be.allocator().stats().cur(MemCategory::Weights);
  auto t_load = std::chrono::steady_clock::now();
  auto wst = std::make_unique<SafeTensors>(f.weights);
  VarModel model(cfg, *wst, be, tp);
  const int64_t file_read = mapped_resident_bytes(f.weights);
  const int64_t file_size = static_cast<int64_t>(wst->file_size());
  wst.reset();  // unmap: the shard was copied out, the file's pages leave this process
  // Measured: the transformer's bytes in the allocator's Weights category (the VAE, replicated, apart).
  const int64_t resident_weights = be.allocator().stats().cur(MemCategory::Weights) - w0;
  SafeTensors vst(f.vae);
  VQVAE vae(cfg, vst, be);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
  const int64_t vae_weights = be.allocator().stats().cur(MemCategory::Weights) - w0 - resident_weights;
  const int64_t model_weight_bytes = model.weight_bytes();
  const int64_t rss = proc_status_bytes("VmRSS");

  VarRequest req;
  req.labels = parse_labels(a.labels);
  req.cfg = cfg.cfg;
  req.sampling.top_k = cfg.top_k;
  req.sampling.top_p = cfg.top_p;
  req.seed = a.seed;
  const int B = static_cast<int>(req.labels.size());
  const int S = static_cast<int>(cfg.patch_nums.size());

  std::vector<double> wall, transformer, decode, share, cpu_s;
  std::vector<std::vector<double>> scale_s(S);
  std::vector<int64_t> scale_bytes(S, 0);
  int64_t kv_peak = 0;
  for (int run = 0; run < a.warmup + a.runs; ++run) {
    tp.barrier();
    const int64_t bytes0 = tp.bytes_all_reduced();
    const double comm0 = tp.seconds_in_collectives(), cpu0 = cpu_seconds();
    double comm = 0, cpu = 0;
    int64_t prev_bytes = bytes0;
    std::vector<int64_t> bytes_this(S, 0);
    VarRunOptions opt;
    opt.decode = out;
    opt.progress = [&](int si, int n_scales, double) {
      bytes_this[si] = tp.bytes_all_reduced() - prev_bytes;
      prev_bytes = tp.bytes_all_reduced();
      if (si + 1 == n_scales) {  // the transformer's share, before the decoder
        comm = tp.seconds_in_collectives() - comm0;
        cpu = cpu_seconds() - cpu0;
      }
    };
    GenerateResult r = var_generate(model, vae, req, opt);
    // The image is done when the decoding rank is done: wait for it inside the measurement.
    tp.barrier();
    if (run < a.warmup) continue;
    cpu_s.push_back(cpu);
    wall.push_back((r.transformer_seconds + r.decode_seconds) / B);
    transformer.push_back(r.transformer_seconds);
    decode.push_back(r.decode_seconds);
    share.push_back(r.transformer_seconds > 0 ? comm / r.transformer_seconds : 0);
    for (int si = 0; si < S; ++si) scale_s[si].push_back(r.timings[si].seconds);
    scale_bytes = bytes_this;
    kv_peak = r.kv_peak_bytes;
  }

  // Per-rank numbers go to world rank 0 (host buffers: the world communicator is MPI).
  const int n = ctx.world ? ctx.world->size() : 1;
  std::vector<int64_t> mine = {resident_weights, rss, proc_status_bytes("VmHWM"),
                               static_cast<int64_t>(median(share) * 1e6), kv_peak,
                               static_cast<int64_t>(median(cpu_s) * 1e6), file_read};
  std::vector<int64_t> all(mine.size() * n);
  if (ctx.world)
    ctx.world->all_gather(mine.data(), all.data(), mine.size(), DType::I64);
  else
    all = mine;
  if (ctx.world_rank != 0) return;

  // The parts TP splits (mat_qkv, q/v bias, scale_mul, proj, fc1 + bias, fc2), counted as the model places them.
  const int64_t sharded = var_param_count(cfg).sharded_bytes(static_cast<int64_t>(dtype_size(be.weight_dtype())));
  const int64_t replicated = model_weight_bytes - sharded / tp.size();
  std::vector<double> share_ranks, cpu_ranks;
  for (int r = 0; r < n; ++r) {
    share_ranks.push_back(all[r * mine.size() + 3] / 1e6);
    cpu_ranks.push_back(all[r * mine.size() + 5] / 1e6);
  }
  const double mean_share = [&] {
    double s = 0;
    for (double x : share_ranks) s += x;
    return s / n;
  }();

  fmt::print("bench-scaling: {} (depth {}, width {}, heads {}, {} scales, {} tokens), {} image(s), tp {} ({} comm), "
             "{} OpenMP threads/rank, {} on {} ({} cores); median of {} runs after {} warm-up\n",
             f.config, cfg.depth, cfg.embed_dim, cfg.num_heads, S, cfg.schedule().total(), B, tp.size(), tp.name(),
             omp_get_max_threads(), be.name(), cpu_model(), sysconf(_SC_NPROCESSORS_ONLN), a.runs, a.warmup);
  fmt::print("  load {:.2f} s; wall {:.3f} s/image (transformer {:.3f} s, decoder {:.3f} s); comm share {:.1f}% "
             "(mean over ranks)\n",
             load_s, median(wall), median(transformer), median(decode), 100 * mean_share);
  fmt::print("  {:>5} {:>7} {:>10} {:>14}\n", "scale", "tokens", "time (s)", "all-reduced");
  for (int si = 0; si < S; ++si)
    fmt::print("  {:>5} {:>7} {:>10.4f} {:>14}\n", si, cfg.schedule().tokens(si), median(scale_s[si]),
               format_bytes(scale_bytes[si]));
  fmt::print("  {:>5} {:>14} {:>16} {:>14} {:>14} {:>12} {:>10}   (weights: the transformer's; VAE {} on every "
             "rank; file: pages of the {} checkpoint the rank read)\n",
             "rank", "weights", "file read", "RSS (loaded)", "peak RSS", "comm share", "CPU s", format_bytes(vae_weights),
             format_bytes(file_size));
  for (int r = 0; r < n; ++r)
    fmt::print("  {:>5} {:>14} {:>16} {:>14} {:>14} {:>11.1f}% {:>10.2f}\n", r, format_bytes(all[r * mine.size()]),
               format_bytes(all[r * mine.size() + 6]), format_bytes(all[r * mine.size() + 1]),
               format_bytes(all[r * mine.size() + 2]), 100 * share_ranks[r], cpu_ranks[r]);
  fmt::print("  weights per rank: replicated {} + sharded {} / {} = {}\n", format_bytes(replicated), format_bytes(sharded),
             tp.size(), format_bytes(model_weight_bytes));

  if (!a.json.empty()) {
    nlohmann::json j;
    j["model"] = f.config;
    j["depth"] = cfg.depth;
    j["embed_dim"] = cfg.embed_dim;
    j["num_heads"] = cfg.num_heads;
    j["tokens"] = cfg.schedule().total();
    j["images"] = B;
    j["tp"] = tp.size();
    j["comm"] = tp.name();
    j["threads_per_rank"] = omp_get_max_threads();
    j["cpu"] = cpu_model();
    j["cores"] = sysconf(_SC_NPROCESSORS_ONLN);
    j["runs"] = a.runs;
    j["load_s"] = load_s;
    j["wall_per_image_s"] = median(wall);
    j["transformer_s"] = median(transformer);
    j["decode_s"] = median(decode);
    j["comm_share"] = mean_share;
    j["comm_share_per_rank"] = share_ranks;
    j["transformer_cpu_s_per_rank"] = cpu_ranks;
    nlohmann::json sc = nlohmann::json::array();
    for (int si = 0; si < S; ++si)
      sc.push_back({{"scale", si}, {"tokens", cfg.schedule().tokens(si)}, {"seconds", median(scale_s[si])},
                    {"allreduce_bytes", scale_bytes[si]}});
    j["scales"] = sc;
    std::vector<int64_t> wr, rr, hr;
    for (int r = 0; r < n; ++r) {
      wr.push_back(all[r * mine.size()]);
      rr.push_back(all[r * mine.size() + 1]);
      hr.push_back(all[r * mine.size() + 2]);
    }
    j["weights_bytes_per_rank"] = wr;
    std::vector<int64_t> fr;
    for (int r = 0; r < n; ++r) fr.push_back(all[r * mine.size() + 6]);
    j["file_read_bytes_per_rank"] = fr;
    j["file_bytes"] = file_size;
    j["rss_bytes_per_rank"] = rr;
    j["peak_rss_bytes_per_rank"] = hr;
    j["weights_bytes_replicated"] = replicated;
    j["vae_weights_bytes"] = vae_weights;
    j["weights_bytes_sharded_total"] = sharded;
    j["kv_peak_bytes_rank0"] = all[4];
    write_file_atomic(a.json, j.dump(1) + "\n");
  }
}

}  // namespace

void register_bench_scaling(CLI::App& app) {
  auto a = std::make_shared<ScalingArgs>();
  auto* cmd = app.add_subcommand("bench-scaling", "Measure one tensor-parallel configuration (run under mpirun -n TP)");
  cmd->add_option("--model", a->files.config, "Model config JSON (default: the demo model)");
  cmd->add_option("--weights", a->files.weights, "Transformer weights (safetensors)");
  cmd->add_option("--vae", a->files.vae, "VAE weights (safetensors)");
  cmd->add_option("--labels", a->labels, "Class labels of one batch")->capture_default_str();
  cmd->add_option("--runs", a->runs, "Measured runs (the median is reported)")->capture_default_str();
  cmd->add_option("--warmup", a->warmup, "Unmeasured runs first")->capture_default_str();
  cmd->add_option("--seed", a->seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--json", a->json, "Also write the numbers to this JSON file (world rank 0)");
  add_context_options(cmd, a->ctx);
  cmd->callback([a] { run_scaling(*a); });
}

}  // namespace skv
