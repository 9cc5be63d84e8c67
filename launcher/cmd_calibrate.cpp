// cmd_calibrate.cpp - `scalekv calibrate`: ScaleKV budget tables from a few requests (kvcache/calibration.h).
// For a VAR model the prompts file holds class labels, one request per line ("3", "0-9", "207,360");
// for an Infinity model every prompt of --text-embeddings (scripts/encode_prompts.py) is one request,
// on the schedule of --resolution / --h-div-w.
#include <fmt/core.h>

#include <sstream>

#include "launcher/calibrate.h"
#include "launcher/commands.h"
#include "launcher/t5_prompts.h"
#include "launcher/context.h"
#include "launcher/kv_options.h"
#include "launcher/progress.h"
#include "launcher/var_bundle.h"
#include "runtime/check.h"
#include "runtime/file_io.h"
#include "runtime/models/infinity_generate.h"
#include "runtime/models/infinity_text.h"
#include "runtime/models/model_bundle.h"

namespace skv {

std::vector<std::string> read_prompt_lines(const std::string& path) {
  SKV_CHECK(!path.empty(), "--prompts is empty: give a file of class labels, one request per line");
  std::istringstream f(read_input_file(path, 64ull << 20));
  std::vector<std::string> out;
  std::string line;
  while (std::getline(f, line)) {
    const size_t a = line.find_first_not_of(" \t\r"), b = line.find_last_not_of(" \t\r");
    if (a == std::string::npos || line[a] == '#') continue;
    out.push_back(line.substr(a, b - a + 1));
  }
  SKV_CHECK(!out.empty(), "--prompts {}: no prompts or labels in the file (one per line)", path);
  return out;
}

namespace {

struct CalibrateArgs {
  ModelFiles files;
  bool random = false;
  uint64_t weight_seed = 0, seed = 0;
  std::string prompts, out;
  std::string budget = "10%";
  int drafters = 0, drafters_total = 0, window = 0, asi_topk = 16, asi_queries = 64;
  std::string text_embeddings;  // Infinity
  T5PromptArgs t5;              // Infinity: --t5 DIR with --prompt / --prompts (the text prompts file)
  int resolution = 0;           // Infinity: 0 = the config's
  double h_div_w = 0;           // Infinity: 0 = the config's
  ContextArgs ctx;
};

ScaleKVOptions calibration_options(const CalibrateArgs& a, const Schedule& sched, int config_window) {
  ScaleKVOptions o;
  o.budget = resolve_kv_budget(a.budget, sched);
  o.window = a.window > 0 ? a.window : config_window;
  o.drafters_per_scale = a.drafters;
  o.drafters_total = a.drafters_total;
  o.asi_topk = a.asi_topk;
  o.asi_queries = a.asi_queries;
  return o;
}

void report_table(const CalibrateArgs& a, const BudgetTable& t, const std::string& config, size_t requests) {
  write_budget_table(a.out, t, config);
  fmt::print("calibrated {} ({} requests): base capacity {} tokens, window {}, compressed scales {}..{}\n", config,
             requests, t.base_capacity, t.window, t.scales.front(), t.scales.back());
  fmt::print("{:>5} {:>9} {:>8} {:>8}  drafters (ASI z-score)\n", "scale", "drafters", "B_d", "B_r");
  for (size_t i = 0; i < t.scales.size(); ++i) {
    int64_t bd = 0, br = 0;
    std::string ds;
    for (int l = 0; l < t.depth; ++l) {
      if (t.drafter[i][l]) {
        bd = t.budgets[i][l];
        ds += fmt::format(" {} ({:.2f})", l, t.z[i][l]);
      } else {
        br = t.budgets[i][l];
      }
    }
    fmt::print("{:>5} {:>9} {:>8} {:>8} {}\n", t.scales[i], t.drafter_count(static_cast<int>(i)), bd, br, ds);
  }
  fmt::print("wrote {}\n", a.out);
}

// Infinity: the full cache on every prompt of the embeddings file, one request each.
void run_calibrate_infinity(const CalibrateArgs& a, const std::string& config) {
  T5PromptArgs t5 = a.t5;
  if (t5.given()) t5.prompts_file = a.prompts;  // with --t5, --prompts is a file of text prompts
  SKV_CHECK(t5.given() || !a.text_embeddings.empty(), "calibrating the Infinity model {} needs --text-embeddings FILE "
            "(the prompts; scripts/encode_prompts.py writes it), or --t5 DIR with --prompts FILE / --prompt TEXT", config);
  SKV_CHECK(t5.given() || a.prompts.empty(), "--prompts holds VAR class labels; for the Infinity model {} the prompts "
            "are --text-embeddings, or text prompts with --t5 DIR", config);
  SKV_CHECK(a.random || (!a.files.weights.empty() && !a.files.vae.empty()), "calibrating {} needs --weights and "
            "--vae (or --random-weights)", config);
  const InfinityConfig cfg = InfinityConfig::load(config);
  const std::vector<std::string> prompts = t5_prompts(t5, a.text_embeddings, cfg.text_channels, config);
  InfinityText text;
  if (!t5.given()) text = load_infinity_text(a.text_embeddings, cfg.text_channels);
  const Schedule sched = infinity_schedule_for(a.h_div_w > 0 ? a.h_div_w : cfg.h_div_w,
                                               a.resolution > 0 ? a.resolution : cfg.resolution);
  RunContext ctx = make_context(a.ctx);
  Backend& be = *ctx.backend;
  if (t5.given()) text = encode_t5_prompts(t5, prompts, be, *ctx.tp, ctx.is_output_rank());
  const auto loaded = load_infinity(cfg, a.random ? WeightSource::random_weights(a.weight_seed)
                                                 : WeightSource::files(a.files.weights, a.files.vae), be, *ctx.tp);
  const InfinityModel& model = *loaded->model;
  const BsqVae& vae = *loaded->vae;
  const ScaleKVOptions o = calibration_options(a, sched, 16);
  const int n = static_cast<int>(text.lens.size());
  Progress prog("calibrate");
  auto run = [&](int i, KVPolicy& policy) {
    InfinityRequest req = infinity_request_defaults(cfg, sched);
    req.text = slice_infinity_text(text, i, i + 1);
    req.seed = a.seed + static_cast<uint64_t>(i);
    InfinityRunOptions opt;
    opt.policy = &policy;
    opt.decode = false;
    opt.progress = [&](int si, int S, double) { prog.update(fmt::format("prompt {}/{} scale {}/{}", i + 1, n, si + 1, S)); };
    infinity_generate(model, vae, req, opt);
  };
  const BudgetTable t = calibrate_budgets(run, n, cfg.depth, sched, o, ctx.tp.get());
  prog.done(fmt::format("{} prompts", n));
  if (ctx.is_output_rank()) report_table(a, t, config, static_cast<size_t>(n));
}

void run_calibrate(const CalibrateArgs& a) {
  check_output_file(a.out, "--out");  // a table that cannot be written fails now, not after the run
  const std::string config = a.files.config.empty() ? resolve_model_files(a.files).config : a.files.config;
  const std::string family = model_family(config);
  if (family == "infinity") return run_calibrate_infinity(a, config);
  SKV_CHECK(family == "var", "{}: calibrate knows the var and infinity families, not '{}'", config, family);
  SKV_CHECK(!a.prompts.empty(), "--prompts FILE is required: class labels, one request per line (e.g. 3 or 0-9)");
  SKV_CHECK(a.text_embeddings.empty() && !a.t5.given() && a.t5.prompt.empty(), "--text-embeddings, --t5 and --prompt "
            "are for Infinity models; {} is a VAR model (use --prompts)", config);
  const auto lines = read_prompt_lines(a.prompts);
  RunContext ctx = make_context(a.ctx);
  auto b = load_var_bundle(a.files, a.random, a.weight_seed, *ctx.backend, *ctx.tp);
  const Schedule sched = b->cfg.schedule();
  const ScaleKVOptions o = calibration_options(a, sched, b->cfg.kv_window);
  std::vector<std::vector<int64_t>> labels;
  for (const auto& l : lines) labels.push_back(parse_labels(l));
  Progress prog("calibrate");
  auto run = [&](int i, KVPolicy& policy) {
    VarRequest req;
    req.labels = labels[i];
    req.cfg = b->cfg.cfg;
    req.sampling.top_k = b->cfg.top_k;
    req.sampling.top_p = b->cfg.top_p;
    req.seed = a.seed + i;
    VarRunOptions opt;
    opt.policy = &policy;
    opt.decode = false;
    opt.progress = [&](int si, int S, double) { prog.update(fmt::format("request {}/{} scale {}/{}", i + 1, labels.size(), si + 1, S)); };
    var_generate(*b->model, *b->vae, req, opt);
  };
  BudgetTable t = calibrate_budgets(run, static_cast<int>(labels.size()), b->cfg.depth, sched, o, ctx.tp.get());
  prog.done(fmt::format("{} requests", labels.size()));
  if (ctx.is_output_rank()) report_table(a, t, config, labels.size());
}

}  // namespace

void register_calibrate(CLI::App& app) {
  auto a = std::make_shared<CalibrateArgs>();
  auto* cmd = app.add_subcommand("calibrate", "Compute ScaleKV drafter/refiner budgets (ASI) from a few requests");
  cmd->add_option("--model", a->files.config, "Model config JSON (default: the demo model)");
  cmd->add_option("--weights", a->files.weights, "Transformer weights (safetensors)");
  cmd->add_option("--vae", a->files.vae, "VAE weights (safetensors)");
  cmd->add_flag("--random-weights", a->random, "Use deterministic random weights of the config's shape");
  cmd->add_option("--weight-seed", a->weight_seed, "Seed of --random-weights")->capture_default_str();
  cmd->add_option("--prompts", a->prompts, "VAR: class labels, one request per line (such as 3 or 0-9); Infinity with "
                  "--t5: text prompts, one per line");
  add_t5_prompt_options(cmd, a->t5, false);
  cmd->add_option("--text-embeddings", a->text_embeddings,
                  "Infinity: prompt embeddings (scripts/encode_prompts.py), one request per prompt");
  cmd->add_option("--resolution", a->resolution, "Infinity: 256, 512, 768 or 1024 (default: the config's)");
  cmd->add_option("--h-div-w", a->h_div_w, "Infinity: aspect ratio of the schedule (default: the config's)");
  cmd->add_option("--out", a->out, "Budget table to write (JSON)")->required();
  cmd->add_option("--kv-budget", a->budget, "Uniform budget B: a share (10%) or tokens per layer")->capture_default_str();
  cmd->add_option("--scalekv-drafters", a->drafters, "Drafters per scale (0: ceil(depth / 16))")->capture_default_str();
  cmd->add_option("--drafters-total", a->drafters_total,
                  "N_d over all compressed scales (0: drafters per scale x compressed scales)")->capture_default_str();
  cmd->add_option("--kv-window", a->window, "Observation window of the table (default: the config's kv_window, else 16)");
  cmd->add_option("--asi-topk", a->asi_topk, "K': top history attention weights summed in the ASI")->capture_default_str();
  cmd->add_option("--asi-queries", a->asi_queries, "Current-map queries sampled for the ASI")->capture_default_str();
  cmd->add_option("--seed", a->seed, "Sampling seed of the first request")->capture_default_str();
  add_context_options(cmd, a->ctx);
  cmd->callback([a] { run_calibrate(*a); });
}

}  // namespace skv
