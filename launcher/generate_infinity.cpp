#include "launcher/generate_infinity.h"

#include <fmt/core.h>

#include <algorithm>
#include <limits>

#include "launcher/generate_output.h"
#include "launcher/kv_options.h"
#include "launcher/progress.h"
#include "launcher/request_check.h"
#include "runtime/check.h"
#include "runtime/image_io.h"
#include "runtime/models/infinity_generate.h"
#include "runtime/models/model_bundle.h"
#include "runtime/models/infinity_text.h"
#include "runtime/models/request_kv.h"
#include "engine/engine.h"
#include "engine/infinity_family.h"

namespace skv {

void add_infinity_generate_options(CLI::App* cmd, InfinityGenerateArgs& a) {
  cmd->add_option("--text-embeddings", a.text_embeddings,
                  "Infinity: prompt embeddings (safetensors kv_compact + lens; scripts/encode_prompts.py)");
  cmd->add_option("--h-div-w", a.h_div_w, "Infinity: aspect ratio height/width from the dynamic-resolution table "
                  "(default: the config's)");
  cmd->add_option("--resolution", a.resolution, "Infinity: 256, 512, 768 or 1024 (default: the config's)");
  cmd->add_option("--tau", a.tau, "Infinity: sampling temperature per scale (default: the config's)");
  add_t5_prompt_options(cmd, a.t5, true);
}

void run_generate_infinity(const ModelFiles& f, const InfinityGenerateArgs& a, double cfg_scale, int top_k, float top_p,
                           uint64_t seed, const std::string& out, int batch, const std::string& kv_memory,
                           const std::string& device_memory, const ContextArgs& ctx_args, const KVOptions& kv) {
  const InfinityConfig cfg = InfinityConfig::load(f.config);
  std::vector<std::string> prompts = t5_prompts(a.t5, a.text_embeddings, cfg.text_channels, f.config);
  SKV_CHECK(a.t5.given() || !a.text_embeddings.empty(), "Infinity models need prompts: --t5 DIR with --prompt TEXT / "
            "--prompts FILE, or --text-embeddings FILE (scripts/encode_prompts.py or `scalekv encode-text`)");
  InfinityText text;
  if (!a.t5.given()) text = load_infinity_text(a.text_embeddings, cfg.text_channels, &prompts);
  const double h_div_w = a.h_div_w > 0 ? a.h_div_w : cfg.h_div_w;
  const int resolution = a.resolution > 0 ? a.resolution : cfg.resolution;
  const Schedule sched = infinity_schedule_for(h_div_w, resolution);
  auto policy = make_kv_policy(kv, {cfg.depth, cfg.num_heads, sched});
  const int n = static_cast<int>(a.t5.given() ? prompts.size() : text.lens.size());
  if (kv_memory.empty() && device_memory.empty())  // a cap bounds what the engine holds at once instead
    check_batch_fits(*policy, sched, cfg.depth, batch > 0 ? std::min(batch, n) : n,
                     cfg.num_heads / std::max(1, ctx_args.tp), cfg.head_dim(), batch > 0);
  RunContext ctx = make_context(ctx_args);
  check_same_request(ctx, {{"--text-embeddings / --prompt (prompts)",
                            a.t5.given() ? fmt::format("{} prompts: {}", n, fmt::join(prompts, "\n"))
                                         : fmt::format("{} prompts, lengths {}", n, fmt::join(text.lens, ","))},
                           {"--resolution / --h-div-w", sched.describe()},
                           {"--seed", std::to_string(seed)},
                           {"--cfg / --tau / --top-k / --top-p", fmt::format("{} {} {} {}", cfg_scale, a.tau, top_k, top_p)},
                           {"--batch", std::to_string(batch)},
                           {"--kv-policy", policy->name()},
                           {"--kv-budget / --kv-window / --kv-budget-table",
                            fmt::format("{} {} {}", kv.budget, kv.window, kv.budget_table)}});
  Backend& be = *ctx.backend;
  // As VAR (cmd_generate.cpp): each data-parallel replica takes its contiguous share of the prompts, and
  // its output rank writes; image ids stay global, so a prompt's bits and pixels do not depend on which
  // replica ran it. A replica encodes only its own prompts.
  const auto [first, last] = ctx.share(n);
  int64_t text_first = 0;  // the global index of text's first prompt
  if (a.t5.given() && last > first) {
    text = encode_t5_prompts(a.t5, std::vector<std::string>(prompts.begin() + first, prompts.begin() + last), be,
                             *ctx.tp, ctx.is_output_rank());
    text_first = first;
  }
  const auto loaded = load_infinity(cfg, WeightSource::files(f.weights, f.vae), be, *ctx.tp);

  InfinityRequest defaults = infinity_request_defaults(cfg, sched);
  if (cfg_scale >= 0) defaults.cfg_list = {cfg_scale};
  if (a.tau > 0) defaults.tau_list = {a.tau};
  if (top_k >= 0) defaults.sampling.top_k = top_k;
  if (top_p >= 0) defaults.sampling.top_p = top_p;
  SKV_CHECK(defaults.sampling.top_p >= 0 && defaults.sampling.top_p <= 1, "--top-p {} must be in [0, 1]",
            defaults.sampling.top_p);
  // As VAR (cmd_generate.cpp): one engine request per prompt of this replica's share, all submitted at
  // once; the engine steps those in flight together (at most --batch of them, within --kv-memory).
  InfinityFamily family(*loaded->model, *loaded->vae, defaults, text, text_first);
  EngineOptions eo;
  eo.limits.kv_cap_bytes = !kv_memory.empty() ? parse_byte_size(kv_memory, "--kv-memory")
                                              : std::numeric_limits<int64_t>::max() / 4;
  if (!device_memory.empty()) eo.device_memory_bytes = parse_byte_size(device_memory, "--device-memory");
  eo.max_in_flight = batch;
  const bool out_rank = ctx.is_output_rank();
  const int S = sched.num_scales();
  Progress prog("generate");
  eo.on_progress = [&](const EngineProgress& p) {
    if (out_rank && p.first_id >= 0)
      prog.update(fmt::format("images {}/{}  {} in flight  image {} at scale {}/{}  {:.3f}s", p.finished,
                              last - first, p.in_flight, p.first_id + 1, p.first_scales_done, S, p.step_seconds));
  };
  Engine engine(family, be, *ctx.tp, ctx.tp_host ? *ctx.tp_host : *ctx.tp, eo);
  if (ctx.tp->rank() == 0) {
    for (int64_t i = first; i < last; ++i) {
      EngineRequest r;
      r.id = i;
      r.prompts = {i};
      r.image_ids = {static_cast<uint32_t>(i)};
      r.seed = seed;
      r.kv = kv;
      r.kv.given.clear();  // checked once for the command: no warning per request
      if (i == first) {
        const std::string why = engine.never_fits(r);
        SKV_CHECK(why.empty(), "{}: one image can never run: {}", memory_options(kv_memory, device_memory), why);
      }
      engine.submit(std::move(r));
    }
    engine.close();
  }
  ImageOutput images(out, last - first);
  double dec_s = 0;
  int W = 0, H = 0;
  const double t0 = now_seconds();
  engine.run([&](EngineResult&& r) {
    dec_s += r.gen.decode_seconds;
    W = r.width;
    H = r.height;
    if (!out_rank) return;
    images.write_png(fmt::format("{:04d}.png", r.id), r.rgb[0].data(), W, H);
    if (a.save_tokens) images.add_tokens(fmt::format("{:04d}.png", r.id), std::move(r.gen.tokens));
  });
  if (out_rank && a.save_tokens) images.write_tokens(ctx.replica);
  const double total_s = now_seconds() - t0;
  const EngineStats st = engine.stats();
  prog.done(fmt::format("{} images", last - first));
  if (!out_rank || last == first) return;
  if (ctx.replicas > 1) fmt::print("replica {}/{}: images {}-{} of {}; ", ctx.replica, ctx.replicas, first, last - 1, n);
  fmt::print("generated {} images ({}x{}, h/w {}, {} scales: {}) in {:.3f} s ({:.3f} s/image, decoder {:.3f} s) on {}{}; "
             "KV peak {} ({} requests in flight at most{}); wrote {} PNGs to {}/\n", last - first, W, H, h_div_w, S,
             sched.describe(), total_s, total_s / (last - first), dec_s, be.name(),
             ctx.tp->size() > 1 ? fmt::format(" x {} tensor-parallel ranks", ctx.tp->size()) : std::string(),
             format_bytes(st.kv_peak_bytes), st.max_in_flight, device_memory_summary(st), images.written(), out);
}

}  // namespace skv
