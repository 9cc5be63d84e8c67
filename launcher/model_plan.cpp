// model_plan.cpp - model shapes from configs, parameter counts, the KV plan in bytes, largest batch.
#include "launcher/model_plan.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "engine/admission.h"
#include "kvcache/page_pool.h"
#include "kvcache/scalekv.h"
#include "runtime/check.h"
#include "runtime/json_util.h"
#include "runtime/models/infinity_config.h"
#include "runtime/models/infinity_model.h"
#include "runtime/models/var_config.h"
#include "runtime/models/var_model.h"

namespace skv {

namespace {

std::string valid_tp(int heads) {
  std::vector<int> ok;
  for (int t = 1; t <= heads; ++t)
    if (heads % t == 0) ok.push_back(t);
  return fmt::format("{}", fmt::join(ok, ", "));
}

int64_t dtype_bytes(const std::string& s, const char* flag) {
  try {
    return static_cast<int64_t>(dtype_size(dtype_from_cli(s)));
  } catch (const Error&) {
    SKV_FAIL("{} '{}' is not a float type (available: f32, f16, bf16)", flag, s);
  }
}

std::string mib(int64_t b) { return fmt::format("{:.1f}", static_cast<double>(b) / (1024.0 * 1024.0)); }

}  // namespace

ModelShape load_model_shape(const std::string& config, int resolution, double h_div_w) {
  ModelShape s;
  s.config = config;
  s.family = model_family(config);
  if (s.family == "var") {
    SKV_CHECK(resolution == 0 && h_div_w == 0, "{}: --resolution/--h-div-w apply to Infinity models; a VAR model's "
              "schedule is its patch_nums", config);
    const VarConfig c = VarConfig::load(config);
    s.depth = c.depth;
    s.embed_dim = c.embed_dim;
    s.num_heads = c.num_heads;
    s.kv_window = c.kv_window;
    s.head_dim = c.head_dim();
    s.ffn_hidden = c.ffn_hidden();
    s.vocab = c.V;
    s.latent_channels = c.Cvae;
    s.schedule = c.schedule();
    s.schedule_name = fmt::format("patch_nums {}", fmt::join(c.patch_nums, ","));
    s.params = var_param_count(c);
    const auto j = read_json_file(config);
    s.name = j.value("name", config);
    return s;
  }
  // One parser (runtime/models/infinity_config.h): the plan reads the same shape the model is built from.
  const InfinityConfig c = InfinityConfig::load(config);
  s.name = c.name;
  s.depth = c.depth;
  s.embed_dim = c.embed_dim;
  s.num_heads = c.num_heads;
  s.head_dim = c.head_dim();
  s.ffn_hidden = c.ffn_hidden();
  s.vocab = c.V();
  s.latent_channels = c.d_vae();
  const double hw = h_div_w > 0 ? h_div_w : c.h_div_w;
  const int res = resolution > 0 ? resolution : c.resolution;
  s.schedule = infinity_schedule_for(hw, res);
  s.schedule_name = fmt::format("{} h/w {:.3f}", infinity_pixels_for_resolution(res), hw);
  s.params = infinity_param_count(c);
  return s;
}

int64_t parse_memory_size(const std::string& in) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(in, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  SKV_CHECK(used > 0 && std::isfinite(v) && v >= 0, "--device-memory '{}' is not a size (e.g. 80GiB, 24GB, 81920MiB)",
            in);
  std::string unit = in.substr(used);
  for (auto& c : unit) c = static_cast<char>(std::tolower(c));
  const std::vector<std::pair<std::string, double>> units = {
      {"", 1}, {"b", 1}, {"kib", 1024.0}, {"mib", 1024.0 * 1024}, {"gib", 1024.0 * 1024 * 1024},
      {"tib", 1024.0 * 1024 * 1024 * 1024}, {"k", 1024.0}, {"m", 1024.0 * 1024}, {"g", 1024.0 * 1024 * 1024},
      {"t", 1024.0 * 1024 * 1024 * 1024}, {"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12}};
  for (const auto& [u, f] : units)
    if (unit == u) {
      SKV_CHECK(v * f < 0x1p62, "--device-memory '{}' is more than 4 EiB; give the memory of one device (e.g. 80GiB)",
                in);
      return static_cast<int64_t>(v * f);
    }
  SKV_FAIL("--device-memory '{}': unknown unit '{}' (use B, KiB, MiB, GiB, TiB, or KB, MB, GB, TB)", in, unit);
}

PlanResult make_plan(const PlanArgs& a) {
  SKV_CHECK(a.batch >= 1, "--batch {} must be >= 1", a.batch);
  auto given = [&](const char* o) { return a.given.count(o) != 0; };
  SKV_CHECK(!given("--resolution") || a.resolution > 0, "--resolution {} must be one of 256, 512, 768, 1024 (leave it "
            "out for the config's)", a.resolution);
  SKV_CHECK(!given("--h-div-w") || (std::isfinite(a.h_div_w) && a.h_div_w > 0), "--h-div-w {} must be a positive "
            "aspect ratio (height / width) from Infinity's table, e.g. 1.0, 0.5 or 2.0", a.h_div_w);
  SKV_CHECK(a.tp >= 1, "--tp {} must be >= 1", a.tp);
  check_kv_options(a.kv);
  PlanResult r;
  r.shape = load_model_shape(a.model, a.resolution, a.h_div_w);
  const ModelShape& s = r.shape;
  SKV_CHECK(a.tp >= 1 && s.num_heads % a.tp == 0, "--tp {} does not divide the {} heads of {}; valid: {}", a.tp,
            s.num_heads, a.model, valid_tp(s.num_heads));
  r.rows = 2 * static_cast<int64_t>(a.batch);
  r.local_heads = s.num_heads / a.tp;
  const int64_t kb = dtype_bytes(a.k_dtype, "--k-dtype"), vb = dtype_bytes(a.v_dtype, "--v-dtype");
  const int64_t wb = dtype_bytes(a.weight_dtype, "--weight-dtype");
  // Every size below is checked 64-bit arithmetic: past 2^63 bytes the plan is an error naming the
  // figure, never a wrapped or negative number.
  const int64_t image_token_bytes = 2 * static_cast<int64_t>(r.local_heads) * s.head_dim * (kb + vb);
  const int64_t token_bytes = checked_mul(a.batch, image_token_bytes, "KV bytes per token (--batch too large)");
  auto policy = make_kv_policy(a.kv, {s.depth, s.num_heads, s.schedule, s.kv_window});
  // The cache takes whole pages of kKVPageSlots slots (kvcache/page_pool.h): counted in slots, so a batch's
  // pages are its images' pages side by side and every figure stays linear in --batch.
  r.kv = plan_kv(*policy, s.schedule, s.depth, token_bytes, kKVPageSlots);
  r.full = plan_kv(*make_full_policy(), s.schedule, s.depth, token_bytes, kKVPageSlots);
  r.policy_desc = a.kv.policy;
  if (a.kv.policy != "full") {
    if (a.kv.policy == "scalekv") {
      r.policy_desc += a.kv.budget_table.empty() ? " (online calibration: planned with the uniform budget)"
                                                 : " (budget table " + a.kv.budget_table + ")";
    }
    r.budget_tokens = a.kv.budget_table.empty() || !a.kv.budget.empty()
                          ? resolve_kv_budget(a.kv.budget, s.schedule)
                          : read_budget_table(a.kv.budget_table, s.depth, s.schedule).base_capacity;
  }
  r.weight_bytes = s.params.rank_bytes(a.tp, wb);  // Linear weights in --weight-dtype, the rest F32
  const int64_t C = s.embed_dim, Cl = C / a.tp, Fl = s.ffn_hidden / a.tp, T = s.schedule.max_scale_tokens();
  // hidden state, norm output, residual branch and logits-side copies (~6C), q/k/v/attention (4 Cl), FFN (Fl)
  const int64_t image_activation_bytes = 2 * T * (6 * C + 4 * Cl + Fl) * 4;
  r.activation_bytes = checked_mul(a.batch, image_activation_bytes, "activation bytes (--batch too large)");
  // What one more image costs: the plan is linear in the batch (the KV tokens do not depend on it).
  r.bytes_per_image = checked_add(plan_kv(*policy, s.schedule, s.depth, image_token_bytes, kKVPageSlots).peak_bytes(),
                                  image_activation_bytes, "bytes per image");
  try {  // the figures printed below, checked once here
    r.kv.peak_bytes();
    r.kv.store_peak_bytes();
    r.full.peak_bytes();
    r.full.store_peak_bytes();
  } catch (const Error& e) {
    SKV_FAIL("{}: --batch {} is past what a 64-bit plan can count; use a smaller --batch", e.message(), a.batch);
  }
  if (!a.device_memory.empty()) {
    r.device_memory = parse_memory_size(a.device_memory);
    // 64-bit throughout (a static_cast<int> here once made the largest batch shrink as memory grew).
    r.max_batch = r.device_memory > r.weight_bytes ? (r.device_memory - r.weight_bytes) / std::max<int64_t>(1, r.bytes_per_image)
                                                   : 0;
  }
  if (!a.kv_memory.empty()) {
    r.kv_memory = parse_memory_size(a.kv_memory);
    SKV_CHECK(r.kv_memory > 0, "--kv-memory '{}' must be positive", a.kv_memory);
    SKV_CHECK(r.rows <= std::numeric_limits<int>::max(), "--kv-memory: --batch {} is too large to replay", a.batch);
    auto burst = [&](const KVPlan& p, std::string& never) -> int64_t {
      const std::vector<StepDemand> d = request_demand(p, static_cast<int>(r.rows));
      const AdmissionLimits limits{r.kv_memory, 0};
      never = AdmissionLedger(limits).never_fits(d);
      if (!never.empty()) return 0;
      // Enough requests that the cap, not their count, is the limit: in flight never passes the cap over a
      // request's smallest (first) step; three times that covers the staggered starts after the first ones.
      const int64_t most = r.kv_memory / std::max<int64_t>(1, d.front().kv_bytes);
      SKV_CHECK(most <= 10000000, "--kv-memory {}: over 10 million requests could be in flight; not replayed", a.kv_memory);
      return burst_concurrency(d, limits, 3 * most + 3);
    };
    r.burst_in_flight = burst(r.kv, r.kv_never_fits);
    r.full_burst_in_flight = burst(r.full, r.full_kv_never_fits);
  }
  return r;
}

std::string plan_json(const PlanResult& r, const PlanArgs& a) {
  nlohmann::json j;
  const ModelShape& s = r.shape;
  j["model"] = s.name;
  j["config"] = s.config;
  j["family"] = s.family;
  j["depth"] = s.depth;
  j["num_heads"] = s.num_heads;
  j["head_dim"] = s.head_dim;
  j["ffn_hidden"] = s.ffn_hidden;
  j["vocab"] = s.vocab;
  j["latent_channels"] = s.latent_channels;
  j["params_replicated"] = s.params.replicated();
  j["params_sharded"] = s.params.sharded();
  j["tp"] = a.tp;
  j["local_heads"] = r.local_heads;
  j["batch"] = a.batch;
  j["rows"] = r.rows;
  j["schedule"] = s.schedule_name;
  j["tokens"] = s.schedule.total();
  j["tokens_cached_before_last_scale"] = s.schedule.cached_before_last();
  j["kv_policy"] = a.kv.policy;
  j["budget_tokens"] = r.budget_tokens;
  j["k_dtype"] = a.k_dtype;
  j["v_dtype"] = a.v_dtype;
  nlohmann::json scales = nlohmann::json::array();
  for (const auto& ps : r.kv.scales) {
    const auto& sh = s.schedule[ps.scale];
    scales.push_back({{"scale", ps.scale}, {"t", sh.t}, {"h", sh.h}, {"w", sh.w}, {"tokens", ps.tokens},
                      {"store_tokens", ps.store_tokens}, {"store_bytes", ps.store_tokens * r.kv.token_bytes},
                      {"live_peak_bytes", ps.live_peak * r.kv.token_bytes},
                      {"pool_bytes", r.kv.slot_bytes(ps.limit)},
                      {"transient_bytes", ps.tokens * r.kv.token_bytes}});
  }
  j["scales"] = scales;
  j["kv_bytes_store_peak"] = r.kv.store_peak_bytes();
  j["kv_bytes_pool"] = r.kv.pool_bytes();
  j["kv_bytes_transient_peak"] = r.kv.transient_bytes();
  j["kv_bytes_peak"] = r.kv.peak_bytes();
  j["full_kv_bytes_store_peak"] = r.full.store_peak_bytes();
  j["full_kv_bytes_peak"] = r.full.peak_bytes();
  j["kv_store_share_of_full"] = static_cast<double>(r.kv.store_peak_bytes()) / std::max<int64_t>(1, r.full.store_peak_bytes());
  j["kv_peak_share_of_full"] = static_cast<double>(r.kv.peak_bytes()) / std::max<int64_t>(1, r.full.peak_bytes());
  j["weight_dtype"] = a.weight_dtype;
  j["weight_bytes_per_rank"] = r.weight_bytes;
  j["activation_bytes_estimate"] = r.activation_bytes;
  if (r.max_batch >= 0) {
    j["device_memory"] = r.device_memory;
    j["max_batch"] = r.max_batch;
    j["bytes_per_image"] = r.bytes_per_image;
  }
  if (r.burst_in_flight >= 0) {
    j["kv_memory"] = r.kv_memory;
    j["burst_in_flight"] = r.burst_in_flight;
    j["full_burst_in_flight"] = r.full_burst_in_flight;
  }
  return j.dump(1);
}

std::string plan_text(const PlanResult& r, const PlanArgs& a) {
  const ModelShape& s = r.shape;
  std::string o;
  o += fmt::format("model      {} ({}), depth {}, {} heads x {}, TP {} ({} heads per rank)\n", s.name, s.family,
                   s.depth, s.num_heads, s.head_dim, a.tp, r.local_heads);
  o += fmt::format("schedule   {}: {}; {} tokens cached before the last scale\n", s.schedule_name, s.schedule.describe(),
                   s.schedule.cached_before_last());
  o += fmt::format("cache      batch {} ({} rows with CFG), K {} + V {}, policy {}", a.batch, r.rows, a.k_dtype,
                   a.v_dtype, r.policy_desc);
  if (r.budget_tokens > 0)
    o += fmt::format(", budget {} tokens per layer ({:.1f}% of {})", r.budget_tokens,
                     100.0 * r.budget_tokens / s.schedule.cached_before_last(), s.schedule.cached_before_last());
  o += "\n\n";
  o += fmt::format("{:>5} {:>9} {:>7} {:>13} {:>12} {:>15} {:>10} {:>14}\n", "scale", "map", "tokens", "store tokens",
                   "store MiB", "in-scale MiB", "pool MiB", "transient MiB");
  for (const auto& ps : r.kv.scales) {
    const auto& sh = s.schedule[ps.scale];
    o += fmt::format("{:>5} {:>9} {:>7} {:>13} {:>12} {:>15} {:>10} {:>14}\n", ps.scale, fmt::format("{}x{}", sh.h, sh.w),
                     ps.tokens, ps.store_tokens, mib(ps.store_tokens * r.kv.token_bytes),
                     mib(ps.live_peak * r.kv.token_bytes), mib(r.kv.slot_bytes(ps.limit)),
                     mib(ps.tokens * r.kv.token_bytes));
  }
  auto share = [](int64_t a, int64_t b) { return b > 0 ? 100.0 * a / b : 0.0; };
  o += fmt::format("\nKV store peak (paper Table 1: tokens kept before the last scale) {:>10} MiB   full {} MiB, {:.1f}%\n",
                   mib(r.kv.store_peak_bytes()), mib(r.full.store_peak_bytes()),
                   share(r.kv.store_peak_bytes(), r.full.store_peak_bytes()));
  o += fmt::format("KV pool (grows to this by the last scale, in pages of {} slots)   {:>10} MiB\n", kKVPageSlots,
                   mib(r.kv.pool_bytes()));
  o += fmt::format("KV peak (largest pool + the scale's transient K/V)              {:>10} MiB   full {} MiB, {:.1f}%\n",
                   mib(r.kv.peak_bytes()), mib(r.full.peak_bytes()), share(r.kv.peak_bytes(), r.full.peak_bytes()));
  o += fmt::format("weights per rank ({}, transformer)                              {:>10} MiB\n", a.weight_dtype,
                   mib(r.weight_bytes));
  o += fmt::format("activations per rank (estimate, largest scale)                   {:>10} MiB\n", mib(r.activation_bytes));
  if (r.max_batch >= 0)
    o += fmt::format("device memory {}: largest batch that fits: {} ({} MiB per image)\n", a.device_memory, r.max_batch,
                     mib(r.bytes_per_image));
  if (r.burst_in_flight >= 0) {
    auto most = [](int64_t n, const std::string& never) { return never.empty() ? std::to_string(n) : "0 (" + never + ")"; };
    o += fmt::format("KV cap {} per rank: a burst of requests (batch {} each, FCFS, joining at any scale step) holds at most "
                     "{} in flight with {}, {} with the full cache", a.kv_memory, a.batch,
                     most(r.burst_in_flight, r.kv_never_fits), a.kv.policy, most(r.full_burst_in_flight, r.full_kv_never_fits));
    if (r.full_burst_in_flight > 0 && a.kv.policy != "full")
      o += fmt::format(" ({:.1f}x)", static_cast<double>(r.burst_in_flight) / static_cast<double>(r.full_burst_in_flight));
    o += "\n";
  }
  return o;
}

}  // namespace skv
