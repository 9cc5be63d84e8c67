// cmd_generate.cpp - `scalekv generate`: class-conditional images from a VAR model.
// Writes one PNG per image (NNNN_c<label>.png) and prints a summary: time per image, transformer and
// decoder time, measured KV peak. With no model arguments it runs the shipped demo model.
#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <limits>
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
#include "runtime/models/request_kv.h"
#include "engine/engine.h"
#include "engine/var_family.h"

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
  std::string kv_memory, device_memory;
  bool save_tokens = false;
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
  if (a.has("--kv-memory")) parse_byte_size(a.kv_memory, "--kv-memory");
  if (a.has("--device-memory")) parse_byte_size(a.device_memory, "--device-memory");
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
  if (!a.has("--kv-memory") && !a.has("--device-memory"))  // a cap bounds what the engine holds at once instead
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

  // One engine request per image of this replica's share, all submitted at once: the engine packs the
  // requests in flight into one forward pass per scale (at most --batch of them, within --kv-memory).
  const auto [first, last] = ctx.share(n);  // this replica's images (all of them with one replica)
  VarFamily family(model, *loaded->vae);
  EngineOptions eo;
  eo.limits.kv_cap_bytes = a.kv_memory.empty() ? std::numeric_limits<int64_t>::max() / 4
                                               : parse_byte_size(a.kv_memory, "--kv-memory");
  if (a.has("--device-memory")) eo.device_memory_bytes = parse_byte_size(a.device_memory, "--device-memory");
  eo.max_in_flight = a.batch;
  const bool out_rank = ctx.is_output_rank();
  Progress prog("generate");
  eo.on_progress = [&](const EngineProgress& p) {
    if (out_rank && p.first_id >= 0)
      prog.update(fmt::format("images {}/{}  {} in flight  image {} at scale {}/{}  {:.3f}s", p.finished,
                              last - first, p.in_flight, p.first_id + 1, p.first_scales_done, p.first_num_scales,
                              p.step_seconds));
  };
  Engine engine(family, be, *ctx.tp, ctx.tp_host ? *ctx.tp_host : *ctx.tp, eo);
  if (ctx.tp->rank() == 0) {
    for (int64_t i = first; i < last; ++i) {
      EngineRequest r;
      r.id = i;
      r.labels = {req.labels[static_cast<size_t>(i)]};
      r.image_ids = {static_cast<uint32_t>(i)};
      r.seed = req.seed;
      r.cfg = req.cfg;
      r.top_k = req.sampling.top_k;
      r.top_p = req.sampling.top_p;
      r.kv = a.kv;
      r.kv.given.clear();  // checked once for the command: no warning per request
      if (i == first) {
        const std::string why = engine.never_fits(r);
        SKV_CHECK(why.empty(), "{}: one image can never run: {}", memory_options(a.kv_memory, a.device_memory), why);
      }
      engine.submit(std::move(r));
    }
    engine.close();
  }
  ImageOutput out(a.out, last - first);
  double dec_s = 0;
  const double t0 = now_seconds();
  engine.run([&](EngineResult&& r) {
    dec_s += r.gen.decode_seconds;
    if (!out_rank) return;
    SKV_CHECK(r.height == cfg.image_size && r.width == cfg.image_size, "the decoder made {}x{} images for a {}x{} "
              "model", r.width, r.height, cfg.image_size, cfg.image_size);
    const std::string name = fmt::format("{:04d}_c{}.png", r.id, req.labels[static_cast<size_t>(r.id)]);
    out.write_png(name, r.rgb[0].data(), r.width, r.height);
    if (a.save_tokens) out.add_tokens(name, std::move(r.gen.tokens));
  });
  const double total_s = now_seconds() - t0;
  const EngineStats st = engine.stats();
  prog.done(fmt::format("{} images", last - first));
  if (out_rank && ctx.replica == 0) {  // labels.json: file -> class, for scripts/eval/evaluate.py
    nlohmann::json labels = nlohmann::json::object();
    for (int i = 0; i < n; ++i) labels[fmt::format("{:04d}_c{}.png", i, req.labels[i])] = req.labels[i];
    out.write_text("labels.json", labels.dump(1) + "\n");
  }
  if (out_rank && a.save_tokens) out.write_tokens(ctx.replica);
  if (!out_rank || last == first) return;
  if (ctx.replicas > 1) fmt::print("replica {}/{}: images {}-{} of {}; ", ctx.replica, ctx.replicas, first, last - 1, n);
  fmt::print("generated {} images ({}x{}) in {:.3f} s ({:.3f} s/image, decoder {:.3f} s) on {}{}; wrote {} PNGs{}{} to "
             "{}/\n", last - first, cfg.image_size, cfg.image_size, total_s, total_s / (last - first), dec_s, be.name(),
             ctx.tp->size() > 1 ? fmt::format(" x {} tensor-parallel ranks", ctx.tp->size()) : std::string(),
             out.written(), ctx.replica == 0 ? " and labels.json" : "", a.save_tokens ? " and tokens.json" : "", a.out);
  // The full cache of the same requests in flight, as the same allocator would hold it (F32 K and V).
  EngineRequest one;
  one.labels = {0};
  int64_t full_one = 0;
  for (const StepDemand& d : family.demand(one, *full_policy)) full_one = std::max(full_one, d.kv_bytes);
  const int64_t full = full_one * std::max<int64_t>(1, st.max_in_flight);
  fmt::print("KV cache ({}): planned peak {}, measured peak {} ({} bytes), {:.1f}% of the full cache's {}; {} requests "
             "in flight at most{}{}\n", policy->name(), format_bytes(st.kv_planned_peak_bytes),
             format_bytes(st.kv_peak_bytes), st.kv_peak_bytes,
             100.0 * static_cast<double>(st.kv_peak_bytes) / static_cast<double>(std::max<int64_t>(1, full)),
             format_bytes(full), st.max_in_flight,
             a.kv_memory.empty() ? std::string() : fmt::format(" (--kv-memory {})", format_bytes(eo.limits.kv_cap_bytes)),
             device_memory_summary(st));
}

void run_generate(GenerateArgs& a) {
  const ModelFiles f = resolve_model_files(a.files);
  const std::string family = model_family(f.config);
  if (family == "var" || family == "infinity") check_generate_args(a, family);
  if (family == "var") return run_generate_var(a, f);
  if (family == "infinity") {
    a.inf.save_tokens = a.save_tokens;
    return run_generate_infinity(f, a.inf, a.has("--cfg") ? a.cfg : -1, a.has("--top-k") ? a.top_k : -1,
                                 a.has("--top-p") ? a.top_p : -1, a.seed, a.out, a.has("--batch") ? a.batch : 0,
                                 a.has("--kv-memory") ? a.kv_memory : "", a.has("--device-memory") ? a.device_memory : "",
                                 a.ctx, a.kv);
  }
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
  cmd->add_option("--batch", a->batch, "Images per forward pass: requests in flight at once (default: all)");
  cmd->add_option("--kv-memory", a->kv_memory, "Admit requests into this much KV memory (bytes, or with "
                  "KiB/MiB/GiB; default: no cap)");
  cmd->add_option("--device-memory", a->device_memory, "Memory of one device per rank: admit requests into what the "
                  "model leaves, KV, activations and decode counted (default: no cap)");
  cmd->add_flag("--save-tokens", a->save_tokens, "Also write OUT/tokens.json: each image's sampled tokens per scale "
                "(to compare runs, e.g. scripts/bench/quality_bf16.sh)");
  add_infinity_generate_options(cmd, a->inf);
  cmd->callback([a, cmd] {
    for (const auto* o : cmd->get_options())
      if (o->count() > 0) a->given.insert(o->get_name());
    run_generate(*a);
  });
}

}  // namespace skv
