// cmd_serve.cpp - `scalekv serve`: the HTTP endpoint (server/serve.h) on a model. Parses the options,
// loads the model on every rank and hands over; with no arguments it serves the shipped demo model on
// 127.0.0.1:8000. Infinity models take text prompts: `--t5 DIR` loads the text encoder beside the image
// model on every rank of the group (sharded like it) and keeps it for the server's life.
#include <fmt/core.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "engine/infinity_family.h"
#include "engine/var_family.h"
#include "launcher/commands.h"
#include "launcher/context.h"
#include "launcher/kv_options.h"
#include "launcher/model_files.h"
#include "runtime/check.h"
#include "kvcache/schedule.h"
#include "runtime/models/model_bundle.h"
#include "runtime/models/t5_encoder.h"
#include "server/serve.h"

namespace skv {

namespace {

struct ServeArgs {
  ModelFiles files;
  bool random = false;
  int depth = 0;
  std::string t5;         // Infinity: the Flan-T5 folder (resident: it encodes every request's prompt)
  int resolution = 0;     // Infinity: 0 = the config's
  double h_div_w = 0;     // Infinity: the default size's aspect ratio (0 = the config's)
  std::string kv_memory = "1GiB";
  std::string device_memory;  // "": none
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
  // --device-memory alone: no separate KV cap (the default --kv-memory is for runs without a device budget).
  const bool kv_cap = a.device_memory.empty() || a.given.count("--kv-memory");
  EngineOptions eo = parse_engine_options(a.mode, kv_cap ? a.kv_memory : "", a.max_step_tokens, a.device_memory);
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
  SKV_CHECK(opt.http.write_timeout_s > 0 && opt.http.write_timeout_s <= 1e6, "--write-timeout {} must be in (0, 1e6] "
            "seconds", opt.http.write_timeout_s);
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
  SKV_CHECK(family_name == "var" || family_name == "infinity", "{}: serve runs VAR and Infinity models, not the '{}' "
            "family", files.config, family_name);
  const WeightSource src = a.random ? WeightSource::random_weights(1) : WeightSource::files(files.weights, files.vae);

  ModelInfo info;
  info.id = std::filesystem::path(files.config).filename().string();  // var-fmnist.config.json -> var-fmnist
  for (const char* ext : {".config.json", ".json"})
    if (info.id.size() > std::strlen(ext) && info.id.ends_with(ext)) {
      info.id.resize(info.id.size() - std::strlen(ext));
      break;
    }
  info.family = family_name;
  std::unique_ptr<VarBundle> var;
  std::unique_ptr<InfinityBundle> inf;
  std::unique_ptr<T5TextEncoder> t5;
  std::unique_ptr<EngineFamily> family;
  if (family_name == "var") {
    SKV_CHECK(a.t5.empty() && a.resolution <= 0 && a.h_div_w <= 0, "--t5, --resolution and --h-div-w are for "
              "Infinity models; {} is a class-conditional VAR model (drop them)", files.config);
    VarConfig cfg = VarConfig::load(files.config);
    if (a.depth > 0) cfg.depth = a.depth;
    var = load_var(std::move(cfg), src, *ctx.backend, *ctx.tp);
    family = std::make_unique<VarFamily>(*var->model, *var->vae);
    info.sizes = {{var->cfg.image_size, var->cfg.image_size, 0, var->cfg.schedule()}};
    info.num_classes = var->cfg.num_classes;
    info.class_names = var->cfg.class_names;
    info.vocabulary = var->cfg.V;
  } else {
    SKV_CHECK(!a.t5.empty(), "{} is a text-to-image Infinity model: serve needs --t5 DIR (its Flan-T5 text encoder, "
              "kept resident to encode each request's prompt)", files.config);
    InfinityConfig cfg = InfinityConfig::load(files.config);
    if (a.depth > 0) cfg.depth = a.depth;
    const T5Config t5cfg = T5Config::load(a.t5);
    SKV_CHECK(t5cfg.d_model == cfg.text_channels, "--t5 {}: d_model {} but {} expects text_channels {} (this T5 is "
              "not the model's text encoder)", a.t5, t5cfg.d_model, files.config, cfg.text_channels);
    const int resolution = a.resolution > 0 ? a.resolution : cfg.resolution;
    const double h_div_w = a.h_div_w > 0 ? a.h_div_w : cfg.h_div_w;
    const Schedule sched = infinity_schedule_for(h_div_w, resolution);  // errors list the valid ones
    t5 = std::make_unique<T5TextEncoder>(a.t5, *ctx.backend, *ctx.tp);
    inf = load_infinity(std::move(cfg), src, *ctx.backend, *ctx.tp);
    auto f = std::make_unique<InfinityFamily>(*inf->model, *inf->vae, infinity_request_defaults(inf->cfg, sched),
                                              InfinityText{});
    f->accept_text(t5.get(), resolution);
    family = std::move(f);
    // The sizes: the default aspect ratio first, then every other ratio of the dynamic-resolution table at
    // this resolution (one per pixel size) whose RoPE table builds: what a request could fail on later, on
    // every rank of the engine, is checked here once.
    const int px = inf->cfg.vae.patch_size * inf->cfg.patch_factor();  // image pixels per token
    auto add_size = [&](double r, const Schedule& s) {
      const ModelSize z{s.scales().back().w * px, s.scales().back().h * px, r, s};
      for (const ModelSize& o : info.sizes)
        if (o.name() == z.name()) return;
      infinity_rope_table(s, inf->cfg.head_dim(), inf->cfg.rope2d_normalized_by_hw);  // throws naming the limit
      info.sizes.push_back(z);
    };
    add_size(0, sched);
    for (double r : infinity_aspect_ratios()) {
      try {
        add_size(r, infinity_schedule_for(r, resolution));
      } catch (const Error& e) {
        if (ctx.is_output_rank()) fmt::print(stderr, "scalekv serve: size of h/w {} left out: {}\n", r, e.message());
      }
    }
    info.vocabulary = 1 << 20;  // top_k over each bit's two logits: any k >= 2 keeps both, as the official 900
  }

  ServeTopology topo;
  topo.backend = ctx.backend;
  topo.tp = ctx.tp.get();
  topo.control = ctx.tp_host ? ctx.tp_host.get() : ctx.tp.get();
  topo.world_rank = ctx.world_rank;
  topo.replicas = ctx.replicas;
  run_serve(topo, *family, info, opt, eo);
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
  cmd->add_option("--t5", a->t5, "Infinity: Flan-T5 folder (Hugging Face layout); kept resident, it encodes each "
                                 "request's prompt");
  cmd->add_option("--resolution", a->resolution, "Infinity: 256, 512, 768 or 1024 (default: the config's); every "
                                                 "aspect ratio of the dynamic-resolution table is a size");
  cmd->add_option("--h-div-w", a->h_div_w, "Infinity: the default size's aspect ratio height/width (default: the "
                                           "config's)");
  cmd->add_option("--host", a->opt.host, "Address to bind (loopback unless you say otherwise)")->capture_default_str();
  cmd->add_option("--port", a->opt.port, "Port (0: a free one; see --port-file)")->capture_default_str();
  cmd->add_option("--port-file", a->opt.port_file, "Write the bound port here once listening");
  cmd->add_option("--api-key", a->opt.api_key, "Require 'Authorization: Bearer KEY' (except /health and the page); "
                                               "or set SCALEKV_API_KEY");
  cmd->add_option("--kv-memory", a->kv_memory, "KV cap the requests in flight are admitted into")->capture_default_str();
  cmd->add_option("--device-memory", a->device_memory, "Memory of one device per rank: requests are admitted into "
                                                       "what the model (and --t5) leave, KV and activations counted");
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
  cmd->add_option("--write-timeout", a->opt.http.write_timeout_s, "Seconds a write to a client may make no progress "
                  "(then the connection ends and its request is cancelled)")->capture_default_str();
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
