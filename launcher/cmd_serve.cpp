// cmd_serve.cpp - `scalekv serve`: the HTTP endpoint (server/serve.h) on a model. Parses the options,
// loads the model on every rank and hands over; with no arguments it serves the shipped demo model on
// 127.0.0.1:8000.
#include <fmt/core.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "engine/var_family.h"
#include "launcher/commands.h"
#include "launcher/context.h"
#include "launcher/kv_options.h"
#include "launcher/model_files.h"
#include "runtime/check.h"
#include "runtime/models/model_bundle.h"
#include "server/serve.h"

namespace skv {

namespace {

struct ServeArgs {
  ModelFiles files;
  bool random = false;
  int depth = 0;
  std::string kv_memory = "1GiB";
  int64_t max_step_tokens = 0;
  std::string mode = "continuous";
  std::string max_body = "64KiB";
  bool no_warmup = false;
  ServeOptions opt;
  ContextArgs ctx;
  KVOptions kv;
  std::set<std::string> given;
};

void run_serve_command(ServeArgs& a) {
  serve_hold_early_signals();
  EngineOptions eo = parse_engine_options(a.mode, a.kv_memory, a.max_step_tokens);
  SKV_CHECK(!a.given.count("--depth") || (a.random && a.depth >= 1), "--depth {} needs --random-weights and must be "
            ">= 1", a.depth);
  check_kv_options(a.kv);
  ServeOptions opt = a.opt;
  opt.kv = a.kv;
  opt.kv.given.clear();
  opt.warmup = !a.no_warmup;
  opt.http.max_body_bytes = static_cast<size_t>(parse_byte_size(a.max_body, "--max-body"));
  SKV_CHECK(opt.http.read_timeout_s > 0 && opt.http.read_timeout_s <= 1e6, "--read-timeout {} must be in (0, 1e6] "
            "seconds", opt.http.read_timeout_s);
  SKV_CHECK(opt.http.idle_timeout_s > 0 && opt.http.idle_timeout_s <= 1e6, "--idle-timeout {} must be in (0, 1e6] "
            "seconds", opt.http.idle_timeout_s);
  SKV_CHECK(opt.drain_timeout_s >= 0 && opt.drain_timeout_s <= 1e6, "--drain-timeout {} must be in [0, 1e6] seconds",
            opt.drain_timeout_s);
  SKV_CHECK(opt.api.max_n >= 1 && opt.api.max_n <= 64, "--max-n {} must be in [1, 64]", opt.api.max_n);
  if (opt.api_key.empty())
    if (const char* k = std::getenv("SCALEKV_API_KEY")) opt.api_key = k;  // keeps the key out of `ps`

  RunContext ctx = make_context(a.ctx);
  ModelFiles files = a.files;
  SKV_CHECK(!a.random || !files.config.empty(), "--random-weights needs --model CONFIG.json (the shape to fill)");
  if (!a.random) files = resolve_model_files(files);
  const std::string family_name = model_family(files.config);
  SKV_CHECK(family_name == "var", "{}: serve runs class-conditional VAR models so far, not the '{}' family (Infinity "
            "behind HTTP needs a text encoder in the server)", files.config, family_name);
  VarConfig cfg = VarConfig::load(files.config);
  if (a.depth > 0) cfg.depth = a.depth;
  const WeightSource src = a.random ? WeightSource::random_weights(1) : WeightSource::files(files.weights, files.vae);
  auto var = load_var(std::move(cfg), src, *ctx.backend, *ctx.tp);
  VarFamily family(*var->model, *var->vae);

  ModelInfo info;
  info.id = std::filesystem::path(files.config).filename().string();  // var-fmnist.config.json -> var-fmnist
  for (const char* ext : {".config.json", ".json"})
    if (info.id.size() > std::strlen(ext) && info.id.ends_with(ext)) {
      info.id.resize(info.id.size() - std::strlen(ext));
      break;
    }
  info.family = "var";
  info.width = info.height = var->cfg.image_size;
  info.num_classes = var->cfg.num_classes;
  info.class_names = var->cfg.class_names;
  info.vocabulary = var->cfg.V;
  info.schedule = var->cfg.schedule();

  ServeTopology topo;
  topo.backend = ctx.backend;
  topo.tp = ctx.tp.get();
  topo.control = ctx.tp_host ? ctx.tp_host.get() : ctx.tp.get();
  topo.world_rank = ctx.world_rank;
  topo.replicas = ctx.replicas;
  run_serve(topo, family, info, opt, eo);
}

}  // namespace

void register_serve(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  auto* cmd = app.add_subcommand("serve", "HTTP endpoint (OpenAI images API, streamed previews, /metrics) on the "
                                          "engine: scale-level batching under a KV cap");
  cmd->add_option("--model", a->files.config, "Model config JSON (default: the demo model)");
  cmd->add_option("--weights", a->files.weights, "Transformer weights (safetensors)");
  cmd->add_option("--vae", a->files.vae, "VAE weights (safetensors)");
  cmd->add_flag("--random-weights", a->random, "Random weights of --model's shape (benchmarks)");
  cmd->add_option("--depth", a->depth, "With --random-weights: override the config's depth");
  cmd->add_option("--host", a->opt.host, "Address to bind (loopback unless you say otherwise)")->capture_default_str();
  cmd->add_option("--port", a->opt.port, "Port (0: a free one; see --port-file)")->capture_default_str();
  cmd->add_option("--port-file", a->opt.port_file, "Write the bound port here once listening");
  cmd->add_option("--api-key", a->opt.api_key, "Require 'Authorization: Bearer KEY' (except /health and the page); "
                                               "or set SCALEKV_API_KEY");
  cmd->add_option("--kv-memory", a->kv_memory, "KV cap the requests in flight are admitted into")->capture_default_str();
  cmd->add_option("--max-step-tokens", a->max_step_tokens, "Bound on one iteration's query tokens (0: none)")
      ->capture_default_str();
  cmd->add_option("--mode", a->mode, "continuous (scale-level joins), static or sequential")->capture_default_str();
  cmd->add_option("--max-queue", a->opt.max_queue, "Requests waiting for admission before new ones get 429")
      ->capture_default_str();
  cmd->add_option("--max-n", a->opt.api.max_n, "Most images one request may ask for")->capture_default_str();
  cmd->add_option("--max-body", a->max_body, "Largest request body (larger: 413)")->capture_default_str();
  cmd->add_option("--read-timeout", a->opt.http.read_timeout_s, "Seconds to receive a whole request (then 408)")
      ->capture_default_str();
  cmd->add_option("--idle-timeout", a->opt.http.idle_timeout_s, "Seconds a connection may wait for its next request")
      ->capture_default_str();
  cmd->add_option("--drain-timeout", a->opt.drain_timeout_s, "Seconds in-flight requests get to finish after SIGTERM")
      ->capture_default_str();
  cmd->add_option("--io-threads", a->opt.io_threads, "HTTP I/O threads")->capture_default_str();
  cmd->add_flag("--no-warmup", a->no_warmup, "Ready at once, without a warm-up request");
  add_context_options(cmd, a->ctx);
  add_kv_options(cmd, a->kv);
  cmd->callback([a, cmd] {
    for (const auto* o : cmd->get_options())
      if (o->count() > 0) a->given.insert(o->get_name());
    run_serve_command(*a);
  });
}

}  // namespace skv
