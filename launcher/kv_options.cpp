// kv_options.cpp - KV policy CLI options and the policy factory (see kv_options.h).
#include "launcher/kv_options.h"

#include <cmath>

#include "kvcache/budget_table.h"
#include "kvcache/scalekv.h"
#include "runtime/check.h"

namespace skv {

void add_kv_options(CLI::App* cmd, KVOptions& o) {
  cmd->add_option("--kv-policy", o.policy, "KV-cache policy: " + kv_policy_names())->capture_default_str();
  cmd->add_option("--kv-budget", o.budget,
                  "KV budget per layer: a share of the tokens cached before the last scale (10%) or tokens (650); "
                  "default 10%");
  cmd->add_option("--kv-budget-table", o.budget_table,
                  "ScaleKV budget table (ours from `scalekv calibrate`, or the published format)");
  cmd->add_option("--scalekv-scoring", o.scoring, "ScaleKV token scoring: reference (released code) or paper")
      ->capture_default_str();
  cmd->add_option("--scalekv-calibration", o.calibration,
                  "ScaleKV drafters: online (from the request at the first compressed scale), table, or auto")
      ->capture_default_str();
  cmd->add_option("--scalekv-drafters", o.drafters, "ScaleKV drafters per scale (0: ceil(depth / 16))")
      ->capture_default_str();
  cmd->add_option("--kv-window", o.window, "Observation window (scalekv, snapkv, pyramidkv); default: the config's kv_window, else 16");
  cmd->add_option("--kv-sinks", o.sinks, "StreamingLLM sink tokens")->capture_default_str();
}

std::string kv_policy_names() { return "full, sliding-window, streamingllm, snapkv, pyramidkv, scalekv"; }

int64_t round_up_2_significant(double x) {
  SKV_CHECK(x > 0, "internal: rounding {}", x);
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
    try {
      p = std::stod(spec.substr(0, spec.size() - 1), &used);
    } catch (const std::exception&) {
      used = 0;
    }
    SKV_CHECK(used == spec.size() - 1 && std::isfinite(p), "--kv-budget '{}' is not a percentage (e.g. 10%) or a "
              "token count (e.g. 650)", spec);
    SKV_CHECK(p > 0 && p <= 100, "--kv-budget {} is outside (0, 100]; give a share such as 10% or tokens such as 650",
              spec);
    SKV_CHECK(cached > 0, "--kv-budget {}: the schedule {} caches nothing", spec, schedule.describe());
    return std::min(cached, round_up_2_significant(p * static_cast<double>(cached) / 100.0));
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
  const bool known = p == "full" || p == "sliding-window" || p == "streamingllm" || p == "snapkv" || p == "pyramidkv" ||
                     p == "scalekv";
  SKV_CHECK(known, "unknown --kv-policy '{}' (available: {})", p, kv_policy_names());
  SKV_CHECK(o.budget_table.empty() || p == "scalekv", "--kv-budget-table is a ScaleKV table; use it with --kv-policy "
            "scalekv (not {})", p);
  if (p == "full") return make_full_policy();
  SKV_CHECK(o.window >= 0, "--kv-window {} must be positive", o.window);
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
    }
    return std::make_unique<ScaleKVPolicy>(so, m.depth, m.schedule);
  }
  const int64_t b = resolve_kv_budget(o.budget, m.schedule);
  if (p == "sliding-window") return make_sliding_window_policy(b);
  if (p == "streamingllm") return make_streamingllm_policy(b, o.sinks);
  if (p == "snapkv") return make_snapkv_policy(b, m.depth, window);
  return make_pyramidkv_policy(b, m.depth, window, 5, o.pyramid_beta);
}

}  // namespace skv
