// cmd_generate.cpp - `scalekv generate`: class-conditional images from a VAR model.
// Writes one PNG per image (NNNN_c<label>.png) and prints a summary: time per image, transformer and
// decoder time, measured KV peak. With no model arguments it runs the shipped demo model.
#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <tuple>
#include <nlohmann/json.hpp>

#include "launcher/commands.h"
#include "launcher/context.h"
#include "launcher/generate_infinity.h"
#include "launcher/generate_output.h"
#include "launcher/kv_options.h"
#include "launcher/model_files.h"
#include "kvcache/planner.h"
#include "launcher/progress.h"
#include "launcher/request_check.h"
#include "parallel/communicator.h"
#include "runtime/check.h"
#include "runtime/file_io.h"
#include "runtime/image_io.h"
#include "runtime/models/model_bundle.h"
#include "runtime/models/var_generate.h"

namespace skv {

namespace {

struct GenerateArgs {
  ModelFiles files;
  std::string labels = "0-9";
  double cfg = -1;
  float top_p = -1;
  int top_k = -1;
  std::string seed_text = "0";
  uint64_t seed = 0;
  std::string out = "out";
  int batch = 0;
  ContextArgs ctx;
  KVOptions kv;
  InfinityGenerateArgs inf;
  std::set<std::string> given;  // the options given on the command line
  bool has(const char* o) const { return given.count(o) != 0; }
};

// Every option is checked before anything is loaded or allocated: a value out of range is an error
// naming the option and what would work - never silently replaced by the config's default.
void check_generate_args(GenerateArgs& a, const std::string& family) {
  SKV_CHECK(!a.has("--batch") || a.batch >= 1, "--batch {} must be >= 1 (images per forward pass; leave it out to "
            "run all images of a replica at once)", a.batch);
  SKV_CHECK(!a.has("--cfg") || (std::isfinite(a.cfg) && a.cfg >= 0), "--cfg {} must be a finite number >= 0 "
            "(classifier-free guidance scale; leave it out for the config's)", a.cfg);
  SKV_CHECK(!a.has("--top-k") || a.top_k >= 0, "--top-k {} must be >= 0 (0 = off, 1 = greedy)", a.top_k);
  SKV_CHECK(!a.has("--top-p") || (a.top_p >= 0 && a.top_p <= 1), "--top-p {} must be in [0, 1]", a.top_p);
  a.seed = parse_seed(a.seed_text, "--seed");
  check_kv_options(a.kv);
  if (family == "var") {
    for (const char* o : {"--resolution", "--h-div-w", "--tau", "--text-embeddings", "--t5", "--prompt", "--prompts"})
      SKV_CHECK(!a.has(o), "{} applies to Infinity models; {} is a VAR model, whose image size and schedule are fixed "
                "by its patch_nums (drop {})", o, a.files.config.empty() ? "the demo model" : a.files.config, o);
  } else {
    SKV_CHECK(!a.has("--labels"), "--labels is for class-conditional VAR models; an Infinity model's prompts come "
              "from --text-embeddings, or from --prompt / --prompts with --t5");
    SKV_CHECK(!a.has("--resolution") || a.inf.resolution > 0, "--resolution {} must be one of 256, 512, 768, 1024",
              a.inf.resolution);
    SKV_CHECK(!a.has("--h-div-w") || (std::isfinite(a.inf.h_div_w) && a.inf.h_div_w > 0), "--h-div-w {} must be a "
              "positive aspect ratio (height / width) from Infinity's table, e.g. 1.0, 0.5 or 2.0", a.inf.h_div_w);
    SKV_CHECK(!a.has("--tau") || (std::isfinite(a.inf.tau) && a.inf.tau > 0), "--tau {} must be a finite number > 0 "
              "(sampling temperature)", a.inf.tau);
  }
  prepare_output_dir(a.out, "--out");  // a folder that cannot be written fails now, not after the run
}

void run_generate_var(const GenerateArgs& a, const ModelFiles& f) {
  const VarConfig cfg = VarConfig::load(f.config);
  VarRequest req;
  req.labels = parse_labels(a.labels, cfg.num_classes);  // range and count checked before anything is allocated
  req.cfg = a.has("--cfg") ? a.cfg : cfg.cfg;
  req.sampling.top_k = a.has("--top-k") ? a.top_k : cfg.top_k;
  req.sampling.top_p = a.has("--top-p") ? a.top_p : cfg.top_p;
  req.seed = a.seed;
  auto policy = make_kv_policy(a.kv, {cfg.depth, cfg.num_heads, cfg.schedule(), cfg.kv_window});
  auto full_policy = make_full_policy();
  const int n = static_cast<int>(req.labels.size());
  check_batch_fits(*policy, cfg.schedule(), cfg.depth, a.has("--batch") ? std::min(a.batch, n) : n,
                   cfg.num_heads / std::max(1, a.ctx.tp), cfg.head_dim(), a.has("--batch"));

  RunContext ctx = make_context(a.ctx);
  // Ranks given different requests would meet in mismatched collectives (MPI_ERR_TRUNCATE): compare first.
  check_same_request(ctx, {{"--labels", fmt::format("{}", fmt::join(req.labels, ","))},
                           {"--seed", std::to_string(req.seed)},
                           {"--cfg", fmt::format("{}", req.cfg)},
                           {"--top-k", std::to_string(req.sampling.top_k)},
                           {"--top-p", fmt::format("{}", req.sampling.top_p)},
                           {"--batch", std::to_string(a.batch)},
                           {"--kv-policy", policy->name()},
                           {"--kv-budget / --kv-window / --kv-budget-table",
                            fmt::format("{} {} {}", a.kv.budget, a.kv.window, a.kv.budget_table)}});
  Backend& be = *ctx.backend;
  const auto loaded = load_var(cfg, WeightSource::files(f.weights, f.vae), be, *ctx.tp);
  const VarModel& model = *loaded->model;
  const VQVAE& vae = *loaded->vae;

  const auto [first, last] = ctx.share(n);  // this replica's images (all of them with one replica)
  const int bs = a.batch > 0 ? a.batch : std::max<int>(1, static_cast<int>(last - first));
  ImageOutput out(a.out, last - first);
  double total_s = 0, dec_s = 0;
  int64_t kv_peak = 0, kv_planned = 0, kv_capped = 0;
  Progress prog("generate");
  for (int b0 = static_cast<int>(first); b0 < last; b0 += bs) {
    VarRequest sub = req;
    const int b1 = std::min(static_cast<int>(last), b0 + bs);
    sub.labels.assign(req.labels.begin() + b0, req.labels.begin() + b1);
    sub.image_ids.clear();
    for (int i = b0; i < b1; ++i) sub.image_ids.push_back(static_cast<uint32_t>(i));
    VarRunOptions opt;
    opt.policy = policy.get();
    // Every rank of the group decodes a share of the batch (rank 0 the first and never an empty one)
    // and the output rank gathers them: one rank decoding a large batch alone would hold the others
    // in a collective for minutes, past the watchdog (README, Reliability), and take tp times longer.
    const int64_t nb = b1 - b0, tp = ctx.tp->size();
    auto part = [&](int64_t r) { return std::pair<int64_t, int64_t>{(nb * r + tp - 1) / tp, (nb * (r + 1) + tp - 1) / tp}; };
    std::tie(opt.decode_begin, opt.decode_end) = part(ctx.tp->rank());
    opt.decode = opt.decode_end > opt.decode_begin;
    opt.progress = [&](int si, int S, double s) {
      prog.update(fmt::format("images {}-{}/{}  scale {}/{} ({}x{})  {:.3f}s", b0 + 1, b1, n, si + 1, S,
                              cfg.patch_nums[si], cfg.patch_nums[si], s));
    };
    GenerateResult r = var_generate(model, vae, sub, opt);
    total_s += r.transformer_seconds + r.decode_seconds;
    dec_s += r.decode_seconds;
    kv_peak = std::max(kv_peak, r.kv_peak_bytes);
    kv_planned = std::max(kv_planned, r.kv_planned_peak_bytes);
    kv_capped += r.kv_capped;
    const int H = cfg.image_size, W = cfg.image_size;
    const size_t px = static_cast<size_t>(3) * H * W;
    std::vector<uint8_t> rgb(static_cast<size_t>(nb) * px);
    if (opt.decode) {
      SKV_CHECK(r.images.dim(2) == H && r.images.dim(3) == W, "the decoder made {}x{} images for a {}x{} model",
                r.images.dim(3), r.images.dim(2), W, H);
      const auto mine = images_to_rgb8(r.images);
      for (size_t i = 0; i < mine.size(); ++i)
        std::copy(mine[i].begin(), mine[i].end(), rgb.begin() + static_cast<std::ptrdiff_t>((opt.decode_begin + i) * px));
    }
    for (int src = 1; src < tp; ++src) {
      const auto [s0, s1] = part(src);
      if (s1 > s0) ctx.tp->broadcast_host(rgb.data() + s0 * px, static_cast<size_t>(s1 - s0) * px, src);
    }
    if (!ctx.is_output_rank()) continue;
    for (int i = b0; i < b1; ++i)
      out.write_png(fmt::format("{:04d}_c{}.png", i, req.labels[i]), rgb.data() + (i - b0) * px, W, H);
  }
  prog.done(fmt::format("{} images", last - first));
  if (ctx.is_output_rank() && ctx.replica == 0) {  // labels.json: file -> class, for scripts/eval/evaluate.py
    nlohmann::json labels = nlohmann::json::object();
    for (int i = 0; i < n; ++i) labels[fmt::format("{:04d}_c{}.png", i, req.labels[i])] = req.labels[i];
    out.write_text("labels.json", labels.dump(1) + "\n");
  }
  if (!ctx.is_output_rank() || last == first) return;
  if (ctx.replicas > 1) fmt::print("replica {}/{}: images {}-{} of {}; ", ctx.replica, ctx.replicas, first, last - 1, n);
  fmt::print("generated {} images ({}x{}) in {:.3f} s ({:.3f} s/image, decoder {:.3f} s) on {}{}; wrote {} PNGs{} to "
             "{}/\n", last - first, cfg.image_size, cfg.image_size, total_s, total_s / (last - first), dec_s, be.name(),
             ctx.tp->size() > 1 ? fmt::format(" x {} tensor-parallel ranks", ctx.tp->size()) : std::string(),
             out.written(), ctx.replica == 0 ? " and labels.json" : "", a.out);
  // The full cache of the same batch on this rank, as the same allocator would hold it (F32 K and V).
  const int rows = 2 * std::min<int64_t>(bs, last - first);
  const int64_t token_bytes = static_cast<int64_t>(rows) * model.local_heads() * cfg.head_dim() * 2 * 4;
  const KVPlan full = plan_kv(*full_policy, cfg.schedule(), cfg.depth, token_bytes);
  fmt::print("KV cache ({}): planned peak {}, measured peak {} ({} bytes), {:.1f}% of the full cache's {}{}\n",
             policy->name(), format_bytes(kv_planned), format_bytes(kv_peak), kv_peak,
             100.0 * static_cast<double>(kv_peak) / static_cast<double>(std::max<int64_t>(1, full.peak_bytes())),
             format_bytes(full.peak_bytes()),
             kv_capped ? fmt::format("; {} compressions cut to the planned pool", kv_capped) : std::string());
}

void run_generate(GenerateArgs& a) {
  const ModelFiles f = resolve_model_files(a.files);
  const std::string family = model_family(f.config);
  if (family == "var" || family == "infinity") check_generate_args(a, family);
  if (family == "var") return run_generate_var(a, f);
  if (family == "infinity")
    return run_generate_infinity(f, a.inf, a.has("--cfg") ? a.cfg : -1, a.has("--top-k") ? a.top_k : -1,
                                 a.has("--top-p") ? a.top_p : -1, a.seed, a.out, a.has("--batch") ? a.batch : 0,
                                 a.ctx, a.kv);
  SKV_FAIL("{}: the '{}' family is not supported by this build's generate command", f.config, family);
}

}  // namespace

void register_generate(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  auto* cmd = app.add_subcommand("generate", "Generate images (default: the shipped demo model)");
  cmd->add_option("--model", a->files.config, "Model config JSON (default: the demo model)");
  cmd->add_option("--weights", a->files.weights, "Transformer weights (safetensors)");
  cmd->add_option("--vae", a->files.vae, "VAE weights (safetensors)");
  cmd->add_option("--labels", a->labels, "Class labels: 3,7 or 0-9 or 0-9x4 (each 4 times)")->capture_default_str();
  cmd->add_option("--cfg", a->cfg, "Classifier-free guidance scale (default: the config's)");
  cmd->add_option("--top-k", a->top_k, "Top-k sampling, 1 = greedy, 0 = off (default: the config's)");
  cmd->add_option("--top-p", a->top_p, "Top-p (nucleus) sampling, 0 = off (default: the config's)");
  cmd->add_option("--seed", a->seed_text, "Random seed (0 to 2^64 - 1)")->capture_default_str();
  cmd->add_option("--out", a->out, "Output folder for PNGs")->capture_default_str();
  add_context_options(cmd, a->ctx);
  add_kv_options(cmd, a->kv);
  cmd->add_option("--batch", a->batch, "Images per forward pass (default: all at once)");
  add_infinity_generate_options(cmd, a->inf);
  cmd->callback([a, cmd] {
    for (const auto* o : cmd->get_options())
      if (o->count() > 0) a->given.insert(o->get_name());
    run_generate(*a);
  });
}

}  // namespace skv
