// kv_options.cpp - the KV policy command-line options (see kv_options.h).
#include "launcher/kv_options.h"

namespace skv {

void add_kv_options(CLI::App* cmd, KVOptions& o) {
  auto mark = [&o](const char* name) { return [&o, name](const std::string&) { o.given.insert(name); }; };
  cmd->add_option("--kv-policy", o.policy, "KV-cache policy: " + kv_policy_names())->capture_default_str();
  cmd->add_option("--kv-budget", o.budget,
                  "KV budget per layer: a share of the tokens cached before the last scale (10%) or tokens (650); "
                  "default 10%")->each(mark("--kv-budget"));
  cmd->add_option("--kv-budget-table", o.budget_table,
                  "ScaleKV budget table (ours from `scalekv calibrate`, or the published format)");
  cmd->add_option("--scalekv-scoring", o.scoring, "ScaleKV token scoring: reference (released code) or paper")
      ->capture_default_str()->each(mark("--scalekv-scoring"));
  cmd->add_option("--scalekv-calibration", o.calibration,
                  "ScaleKV drafters: online (from the request at the first compressed scale), table, or auto")
      ->capture_default_str()->each(mark("--scalekv-calibration"));
  cmd->add_option("--scalekv-drafters", o.drafters, "ScaleKV drafters per scale (0: ceil(depth / 16))")
      ->capture_default_str()->each(mark("--scalekv-drafters"));
  cmd->add_option("--kv-window", o.window, "Observation window (scalekv, snapkv, pyramidkv); default: the config's kv_window, else 16")
      ->each(mark("--kv-window"));
  cmd->add_option("--kv-sinks", o.sinks, "StreamingLLM sink tokens")->capture_default_str()->each(mark("--kv-sinks"));
}

}  // namespace skv
