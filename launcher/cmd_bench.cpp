// cmd_bench.cpp - `scalekv bench`: wall time per scale, total, decoder, and peak memory per category
// for a model (random weights unless --weights/--vae are given), for each batch size, median of
// --repeats runs. In the same run it measures this machine's GEMM peak (F32, BF16 where the backend runs it,
// and OpenBLAS's sgemm) and reports the share of the compute dtype's peak that the transformer's GEMM +
// attention FLOPs reach. Infinity
// configs (e.g. configs/infinity-2b.json, --resolution 512 --depth 4) go to bench_infinity.h.
// `bench fidelity` (or `bench --fidelity`) and `bench kv-memory` (`--kv-memory`) run the KV-cache
// benchmarks of bench_fidelity.h and bench_kv_memory.h; `bench serve` replays arrivals against the engine
// (bench_serve.h).
#include <fmt/core.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <map>

#include "launcher/bench.h"
#include "launcher/bench_cuda.h"
#include "launcher/bench_fidelity.h"
#include "launcher/bench_infinity.h"
#include "launcher/bench_serve.h"
#include "launcher/bench_kv_memory.h"
#include "launcher/kv_bench.h"
#include "launcher/commands.h"
#include "runtime/check.h"
#include "runtime/file_io.h"
#include "runtime/models/infinity_config.h"
#include "runtime/models/model_bundle.h"
#include "runtime/models/var_generate.h"

namespace skv {

namespace {

// FLOPs of the transformer's matrix products (linear layers, attention, head) for one generation.
double var_flops(const VarConfig& c, int B) {
  const double R = 2.0 * B, C = c.embed_dim, F = c.ffn_hidden(), V = c.V;
  const Schedule s = c.schedule();
  double f = 0, hist = 0;
  for (int si = 0; si < s.num_scales(); ++si) {
    const double l = static_cast<double>(s.tokens(si));
    f += c.depth * (2 * R * l * C * 3 * C + 2 * R * l * C * C + 2 * 2 * R * l * C * F);  // qkv, proj, fc1, fc2
    f += c.depth * 2 * 2 * R * l * (hist + l) * C;                                        // q.k and p.v over all heads
    f += 2 * R * l * C * V;                                                               // head
    hist += l;
  }
  return f;
}

struct Row {
  int batch = 0;
  std::vector<double> total, transformer, decode;
  std::vector<std::vector<double>> per_scale;
  MemStats mem;
  int64_t kv_peak = 0;
};

// Infinity configs: one table per batch size from bench_infinity.h (one rank, random weights).
void run_infinity_benches(const BenchArgs& a) {
  SKV_CHECK(a.weights.empty() && a.vae.empty(), "bench --model {}: Infinity benchmarks use random weights of the "
            "config's shape; drop --weights/--vae", a.model);
  SKV_CHECK(a.ctx.tp == 1, "bench --model {}: the Infinity benchmark runs on one rank (--tp 1)", a.model);
  SKV_CHECK(a.repeats >= 1, "--repeats {} must be >= 1", a.repeats);
  const InfinityConfig cfg = InfinityConfig::load(a.model);
  // The same context set-up as every other command (device, weight dtype), not a backend of its own.
  RunContext ctx = make_context(a.ctx);
  std::string md;  // every batch's table, written once at the end (atomically)
  {                // one model for every batch size
    InfinityBenchOptions o;
    o.config = a.model;
    o.resolution = a.resolution > 0 ? a.resolution : cfg.resolution;
    o.h_div_w = a.h_div_w > 0 ? a.h_div_w : cfg.h_div_w;
    o.batches = a.batches;
    o.depth = a.depth;
    o.repeats = a.repeats;
    o.warmup = a.warmup > 0;
    o.text_len = a.text_len;
    o.decode = a.decode;
    o.device = a.ctx.device;
    o.backend = ctx.backend;
    o.kv = a.kv;
    o.command = a.command;
    o.md_collect = &md;
    run_infinity_bench(o);
  }
  if (!a.md_out.empty()) write_file_atomic(a.md_out, md);
}

// Values out of range are errors, never replaced by defaults (issue 15, class 5).
void check_bench_args(const BenchArgs& a) {
  auto given = [&](const char* o) { return a.given.count(o) != 0; };
  SKV_CHECK(!a.batches.empty(), "--batch needs at least one batch size (e.g. --batch 1,8)");
  for (int b : a.batches) SKV_CHECK(b >= 1, "--batch {} must hold sizes >= 1 (e.g. --batch 1,8)", fmt::join(a.batches, ","));
  SKV_CHECK(a.repeats >= 1, "--repeats {} must be >= 1", a.repeats);
  SKV_CHECK(a.warmup >= 0, "--warmup {} must be >= 0", a.warmup);
  SKV_CHECK(!given("--depth") || a.depth >= 1, "--depth {} must be >= 1 (blocks to run; leave it out for the config's)",
            a.depth);
  SKV_CHECK(!given("--resolution") || a.resolution > 0, "--resolution {} must be one of 256, 512, 768, 1024",
            a.resolution);
  SKV_CHECK(!given("--h-div-w") || (std::isfinite(a.h_div_w) && a.h_div_w > 0), "--h-div-w {} must be a positive "
            "aspect ratio (height / width) from Infinity's table, e.g. 1.0, 0.5 or 2.0", a.h_div_w);
  SKV_CHECK(a.text_len >= 1, "--text-len {} must be >= 1", a.text_len);
  check_kv_options(a.kv);
}

void run_bench(const BenchArgs& a) {
  check_bench_args(a);
  if (!a.md_out.empty()) check_output_file(a.md_out, "--md");  // before the work, not after it
  if (model_family(a.model) == "infinity") return run_infinity_benches(a);
  RunContext ctx = make_context(a.ctx);
  Backend& be = *ctx.backend;
  VarConfig cfg = VarConfig::load(a.model);
  if (a.depth > 0) cfg.depth = a.depth;
  SKV_CHECK(a.repeats >= 1, "--repeats {} must be >= 1", a.repeats);
  const bool random = a.weights.empty();
  SKV_CHECK(random == a.vae.empty(), "--weights and --vae go together");
  Allocator& alloc = be.allocator();

  const auto t_load = std::chrono::steady_clock::now();
  const auto loaded = load_var(cfg, random ? WeightSource::random_weights(1) : WeightSource::files(a.weights, a.vae), be,
                               *ctx.tp);
  const VarModel& model = *loaded->model;
  const VQVAE& vae = *loaded->vae;
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
  auto policy = make_kv_policy(a.kv, {cfg.depth, cfg.num_heads, cfg.schedule(), cfg.kv_window});
  // GEMM peaks measured in this run: the backend's F32 and (where it runs them) BF16 kernels, and
  // OpenBLAS's sgemm (PyTorch's F.linear on Debian). The transformer is compared with the peak of the
  // dtype it computes in.
  const bool bf16 = be.compute_dtype() == DType::BF16;
  const double peak_f32 = measure_gemm_gflops(be, DType::F32, 2048, 3);
  const double peak_bf16 = be.compute_dtype_supported(DType::BF16) ? measure_gemm_gflops(be, DType::BF16, 2048, 3) : 0;
  const double peak_openblas = be.device() == Device::CPU ? measure_openblas_sgemm_gflops(2048, 3) : 0;
  const double gflops = bf16 ? peak_bf16 : peak_f32;
  std::unique_ptr<CudaBenchReport> gpu;  // GPU-only figures: kernel times, attention bandwidth, GEMM vs cuBLAS peak
  if (be.device() == Device::CUDA) gpu = std::make_unique<CudaBenchReport>(be.weight_dtype());

  std::vector<Row> rows;
  for (int B : a.batches) {
    SKV_CHECK(B >= 1, "--batch {} must be >= 1", B);
    Row row;
    row.batch = B;
    row.per_scale.resize(cfg.patch_nums.size());
    VarRequest req;
    for (int b = 0; b < B; ++b) req.labels.push_back(b % cfg.num_classes);
    req.cfg = cfg.cfg;
    req.sampling = {cfg.top_k, cfg.top_p};
    VarRunOptions opt;
    opt.policy = policy.get();
    opt.decode = a.decode;
    alloc.reset_peaks();
    for (int r = 0; r < a.warmup + a.repeats; ++r) {
      GenerateResult res = var_generate(model, vae, req, opt);
      if (r < a.warmup) continue;
      row.transformer.push_back(res.transformer_seconds);
      row.decode.push_back(res.decode_seconds);
      row.total.push_back(res.transformer_seconds + res.decode_seconds);
      for (size_t si = 0; si < res.timings.size(); ++si) row.per_scale[si].push_back(res.timings[si].seconds);
      row.kv_peak = std::max(row.kv_peak, res.kv_peak_bytes);
    }
    row.mem = alloc.stats();
    if (gpu) {
      gpu->profile(fmt::format("batch {}", B), [&] { var_generate(model, vae, req, opt); });
      gpu->attention_sweep(fmt::format("batch {}", B), 2 * B, model.local_heads(), cfg.head_dim(),
                           attention_shapes(*policy, cfg.schedule(), cfg.depth));
    }
    rows.push_back(row);
    if (ctx.is_output_rank())
      fmt::print(stderr, "batch {}: median {:.3f} s over {} runs\n", B, median(row.total), a.repeats);
  }
  if (!ctx.is_output_rank()) return;

  std::string md;
  auto out = [&](const std::string& s) { md += s; };
  out(fmt::format("### scalekv bench: {} ({}), {}\n\n", cfg.path, random ? "random weights" : "checkpoint weights",
                  be.name()));
  out(fmt::format("- machine: {}\n", machine_description()));
  out(fmt::format("- command: `{}`\n", a.command));
  out(fmt::format("- model: depth {}, width {}, heads {}, {} scales ({} tokens), {}x{} images, KV policy {}, "
                  "tp {}\n", cfg.depth, cfg.embed_dim, cfg.num_heads, cfg.patch_nums.size(), cfg.schedule().total(),
                  cfg.image_size, cfg.image_size, policy->name(), ctx.tp->size()));
  out(fmt::format("- compute dtype {}, linear weights {}; median of {} runs after {} warm-up; weights ready in {:.1f} s\n",
                  dtype_name(be.compute_dtype()), dtype_name(be.weight_dtype()), a.repeats, a.warmup, load_s));
  out(fmt::format("- GEMM peaks measured in this run (2048^3, best of 3): {} F32 {:.1f} GFLOP/s{}{}\n\n", be.name(),
                  peak_f32, peak_bf16 > 0 ? fmt::format(", {} BF16 {:.1f} GFLOP/s", be.name(), peak_bf16) : "",
                  peak_openblas > 0 ? fmt::format(", OpenBLAS sgemm {:.1f} GFLOP/s", peak_openblas) : ""));
  out(fmt::format("| batch (x2 CFG) | total s | transformer s | decoder s | s / image | transformer GFLOP | at {} peak s | "
                  "share of peak |\n|---|---|---|---|---|---|---|---|\n", dtype_name(be.compute_dtype())));
  for (const auto& r : rows) {
    const double fl = var_flops(cfg, r.batch) / 1e9;
    const double t = median(r.transformer);
    out(fmt::format("| {} | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {:.0f} | {:.3f} | {:.0f} % |\n", r.batch, median(r.total),
                    t, median(r.decode), median(r.total) / r.batch, fl, fl / gflops, 100 * (fl / gflops) / t));
  }
  out("\nPer-scale transformer time (median, ms; includes sampling and the next-scale input):\n\n| scale | tokens |");
  for (const auto& r : rows) out(fmt::format(" batch {} |", r.batch));
  out("\n|---|---|");
  for (size_t i = 0; i < rows.size(); ++i) out("---|");
  out("\n");
  for (size_t si = 0; si < cfg.patch_nums.size(); ++si) {
    out(fmt::format("| {} | {}x{} |", si, cfg.patch_nums[si], cfg.patch_nums[si]));
    for (const auto& r : rows) out(fmt::format(" {:.1f} |", 1e3 * median(r.per_scale[si])));
    out("\n");
  }
  out("\nPeak memory per category (accounting allocator, whole run incl. decoder):\n\n"
      "| batch | weights | kv | activations | workspace | all |\n|---|---|---|---|---|---|\n");
  for (const auto& r : rows)
    out(fmt::format("| {} | {} | {} | {} | {} | {} |\n", r.batch, format_bytes(r.mem.pk(MemCategory::Weights)),
                    format_bytes(r.kv_peak), format_bytes(r.mem.pk(MemCategory::Activations)),
                    format_bytes(r.mem.pk(MemCategory::Workspace)), format_bytes(r.mem.total_peak)));
  if (gpu) out(gpu->markdown());
  fmt::print("{}", md);
  if (!a.md_out.empty()) {
    write_file_atomic(a.md_out, md);
  }
}

}  // namespace

void register_bench(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  auto* cmd = app.add_subcommand("bench", "Time generation per scale and measure peak memory per category");
  cmd->add_option("--model", a->model, "Model config (random weights unless --weights/--vae)")->capture_default_str();
  cmd->add_option("--weights", a->weights, "Transformer weights (safetensors)");
  cmd->add_option("--vae", a->vae, "VAE weights (safetensors)");
  cmd->add_option("--batch", a->batches, "Batch sizes (images; rows are x2 with CFG)")->delimiter(',')->capture_default_str();
  cmd->add_option("--repeats", a->repeats, "Timed runs per batch (median reported)")->capture_default_str();
  cmd->add_option("--warmup", a->warmup, "Untimed runs first")->capture_default_str();
  cmd->add_option("--depth", a->depth, "Override the config's depth (for time)");
  cmd->add_flag("!--no-decode", a->decode, "Skip the VAE decoder");
  cmd->add_option("--md", a->md_out, "Also write the table to this file");
  cmd->add_option("--resolution", a->resolution, "Infinity: 256, 512, 768 or 1024 (default: the config's)");
  cmd->add_option("--h-div-w", a->h_div_w, "Infinity: aspect ratio from the dynamic-resolution table (default: the "
                  "config's)");
  cmd->add_option("--text-len", a->text_len, "Infinity: tokens per random prompt")->capture_default_str();
  add_context_options(cmd, a->ctx);
  add_kv_options(cmd, a->kv);
  auto f = std::make_shared<FidelityOptions>();
  auto* fc = cmd->add_subcommand("fidelity", "Token agreement, PSNR, SSIM, KV peak and time per policy and budget "
                                             "against the full cache (also: bench --fidelity)");
  add_fidelity_options(fc, *f);
  fc->callback([f] {
    if (const int rc = run_fidelity_bench(*f, current_command_line())) std::exit(rc);
  });
  auto m = std::make_shared<KVMemoryOptions>();
  auto* mc = cmd->add_subcommand("kv-memory", "Measured vs planned KV peak per policy, as a share of the full cache "
                                              "(also: bench --kv-memory)");
  add_kv_memory_options(mc, *m);
  mc->callback([m] {
    if (const int rc = run_kv_memory_bench(*m, current_command_line())) std::exit(rc);
  });
  register_bench_serve(cmd);
  cmd->callback([a, &app, cmd] {
    if (!cmd->get_subcommands().empty()) return;  // fidelity / kv-memory / serve ran instead
    BenchArgs args = *a;
    for (const auto* o : cmd->get_options())
      if (o->count() > 0) args.given.insert(o->get_name());
    args.command = "scalekv bench";
    for (auto* o : app.get_subcommand("bench")->get_options())
      if (o->count() > 0 && !o->get_lnames().empty())
        args.command += o->get_expected_max() == 0  // a flag
                            ? fmt::format(" --{}", o->get_lnames()[0])
                            : fmt::format(" --{} {}", o->get_lnames()[0], fmt::join(o->results(), ","));
    run_bench(args);
  });
}

void rewrite_bench_flags(int argc, char** argv) {
  if (argc < 3 || std::string(argv[1]) != "bench") return;
  if (std::string(argv[2]) == "serve") return;  // its --kv-memory is the KV cap, not the benchmark's name
  for (int i = 2; i < argc; ++i) {
    const std::string s = argv[i];
    if (s != "--fidelity" && s != "--kv-memory") continue;
    static std::string word;
    word = s.substr(2);
    for (int j = i; j > 2; --j) argv[j] = argv[j - 1];  // move the subcommand word right after "bench"
    argv[2] = word.data();
    return;
  }
}

}  // namespace skv
