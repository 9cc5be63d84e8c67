// policy_factory.cpp - KV policy options -> a policy for a model (see policy_factory.h).
#include "kvcache/policy_factory.h"

#include <algorithm>
#include <cmath>

#include "kvcache/budget_table.h"
#include "kvcache/scalekv.h"
#include "runtime/check.h"

namespace skv {

void check_kv_options(const KVOptions& o) {
  const std::string& p = o.policy;
  const bool known = p == "full" || p == "sliding-window" || p == "streamingllm" || p == "snapkv" || p == "pyramidkv" ||
                     p == "scalekv";
  SKV_CHECK(known, "unknown --kv-policy '{}' (available: {})", p, kv_policy_names());
  auto given = [&](const char* name) { return o.given.count(name) != 0; };
  SKV_CHECK(!(p == "full" && given("--kv-budget")), "--kv-budget {} has no effect with --kv-policy full (the full "
            "cache keeps every token): choose a compressing policy (e.g. --kv-policy scalekv) or drop --kv-budget",
            o.budget);
  SKV_CHECK(o.window >= 0 && !(given("--kv-window") && o.window < 1), "--kv-window {} must be >= 1 (tokens of the "
            "observation window; leave it out for the model's default)", o.window);
  SKV_CHECK(o.sinks >= 0, "--kv-sinks {} must be >= 0", o.sinks);
  SKV_CHECK(o.drafters >= 0, "--scalekv-drafters {} must be >= 0 (0: ceil(depth / 16))", o.drafters);
  const bool windowed = p == "scalekv" || p == "snapkv" || p == "pyramidkv";
  if (given("--kv-window") && !windowed)
    SKV_WARN("--kv-window {} has no effect with --kv-policy {} (only scalekv, snapkv and pyramidkv use an observation "
             "window)", o.window, p);
  if (given("--kv-sinks") && p != "streamingllm")
    SKV_WARN("--kv-sinks {} has no effect with --kv-policy {} (only streamingllm keeps sink tokens)", o.sinks, p);
  for (const char* s : {"--scalekv-scoring", "--scalekv-calibration", "--scalekv-drafters"})
    if (given(s) && p != "scalekv") SKV_WARN("{} has no effect with --kv-policy {} (it is a ScaleKV option)", s, p);
}

std::string kv_policy_names() { return "full, sliding-window, streamingllm, snapkv, pyramidkv, scalekv"; }

int64_t round_up_2_significant(double x) {
  SKV_CHECK(x > 0 && std::isfinite(x), "internal: rounding {}", x);
  if (x <= 1) return 1;
  const int digits = static_cast<int>(std::floor(std::log10(x)));
  const double unit = std::pow(10.0, std::max(0, digits - 1));
  return static_cast<int64_t>(std::ceil(x / unit - 1e-9) * unit);
}

int64_t resolve_kv_budget(const std::string& spec_in, const Schedule& schedule) {
  const std::string spec = spec_in.empty() ? "10%" : spec_in;
  const int64_t cached = schedule.cached_before_last();
  if (spec.back() == '%') {
    double p = 0;
    size_t used = 0;
    const std::string num = spec.substr(0, spec.size() - 1);
    // Decimal only: stod would also take "0x0A", "inf" and "nan".
    const bool decimal = !num.empty() && num.find_first_not_of("0123456789.eE+-") == std::string::npos;
    try {
      if (decimal) p = std::stod(num, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    SKV_CHECK(decimal && used == num.size() && std::isfinite(p), "--kv-budget '{}' is not a percentage (e.g. 10%) or "
              "a token count (e.g. 650)", spec);
    SKV_CHECK(p > 0 && p <= 100, "--kv-budget {} is outside (0, 100]; give a share such as 10% or tokens such as 650",
              spec);
    SKV_CHECK(cached > 0, "--kv-budget {}: the schedule {} caches nothing", spec, schedule.describe());
    // At least one token: a vanishing share (1e-300%) must not round to an empty cache.
    return std::clamp<int64_t>(round_up_2_significant(p * static_cast<double>(cached) / 100.0), 1, cached);
  }
  int64_t t = 0;
  size_t used = 0;
  try {
    t = std::stoll(spec, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  SKV_CHECK(used == spec.size(), "--kv-budget '{}' is not a percentage (e.g. 10%) or a token count (e.g. 650)", spec);
  SKV_CHECK(t >= 1, "--kv-budget {} tokens must be at least 1 (or a share such as 10%)", t);
  return t;
}

std::unique_ptr<KVPolicy> make_kv_policy(const KVOptions& o, const KVModelInfo& m) {
  const std::string& p = o.policy;
  check_kv_options(o);
  SKV_CHECK(o.budget_table.empty() || p == "scalekv", "--kv-budget-table is a ScaleKV table; use it with --kv-policy "
            "scalekv (not {})", p);
  if (p == "full") return make_full_policy();
  // A budget too small for the policy is named here with the value the user gave ("--kv-budget 3%"),
  // not later as a token count from inside the policy or the cache.
  auto check_fits = [&](int64_t b, int64_t need, const std::string& what, const std::string& or_else) {
    if (b >= need) return;
    const int64_t cached = m.schedule.cached_before_last();
    const int64_t pct = cached > 0 ? (need * 100 + cached - 1) / cached : 0;
    SKV_FAIL("--kv-budget {} gives {} tokens per layer, below {}: give at least {} tokens{}{}", o.budget.empty() ?
             "10% (the default)" : o.budget, b, what, need,
             pct > 0 && pct <= 100 ? fmt::format(" (--kv-budget {}%)", pct) : std::string(), or_else);
  };
  const int window = o.window > 0 ? o.window : m.window;
  if (p == "scalekv") {
    ScaleKVOptions so;
    SKV_CHECK(o.scoring == "reference" || o.scoring == "paper", "unknown --scalekv-scoring '{}' (available: reference, "
              "paper)", o.scoring);
    so.scoring = o.scoring == "paper" ? ScaleKVScoring::Paper : ScaleKVScoring::Reference;
    SKV_CHECK(o.calibration == "auto" || o.calibration == "online" || o.calibration == "table",
              "unknown --scalekv-calibration '{}' (available: online, table, auto)", o.calibration);
    SKV_CHECK(!(o.calibration == "table" && o.budget_table.empty()),
              "--scalekv-calibration table needs --kv-budget-table FILE (write one with `scalekv calibrate`)");
    SKV_CHECK(!(o.calibration == "online" && !o.budget_table.empty()),
              "--scalekv-calibration online chooses the drafters from the request: drop --kv-budget-table {}",
              o.budget_table);
    so.window = window;
    so.drafters_per_scale = o.drafters;
    if (!o.budget_table.empty()) {
      const int64_t base = o.budget.empty() ? 0 : resolve_kv_budget(o.budget, m.schedule);
      so.table = std::make_shared<BudgetTable>(read_budget_table(o.budget_table, m.depth, m.schedule, base));
      so.calibration = ScaleKVCalibration::Table;
      so.budget = so.table->base_capacity;
    } else {
      so.calibration = ScaleKVCalibration::Online;
      so.budget = resolve_kv_budget(o.budget, m.schedule);
      check_fits(so.budget, window, fmt::format("the observation window of {} tokens", window),
                 " or a smaller --kv-window");
    }
    return std::make_unique<ScaleKVPolicy>(so, m.depth, m.schedule);
  }
  const int64_t b = resolve_kv_budget(o.budget, m.schedule);
  if (p == "snapkv" || p == "pyramidkv")
    check_fits(b, window, fmt::format("the observation window of {} tokens", window), " or a smaller --kv-window");
  if (p == "streamingllm")
    check_fits(b, o.sinks + 1, fmt::format("the {} sink tokens plus one", o.sinks), " or fewer --kv-sinks");
  if (p == "sliding-window") return make_sliding_window_policy(b);
  if (p == "streamingllm") return make_streamingllm_policy(b, o.sinks);
  if (p == "snapkv") return make_snapkv_policy(b, m.depth, window);
  return make_pyramidkv_policy(b, m.depth, window, 5, o.pyramid_beta);
}

}  // namespace skv
