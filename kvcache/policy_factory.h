// policy_factory.h - the KV-cache policy options every command shares (generate, bench, plan, calibrate,
// serve) and the one factory that turns them into a policy for a model. launcher/kv_options.h maps the
// command-line options onto KVOptions; errors name those options (--kv-budget ...), as the user gave them.
// Budgets are a share of the tokens cached before the last scale ("10%") or tokens per layer ("650"); a
// share is rounded UP to two significant digits (10% of Infinity's 6425 cached tokens = 642.5 -> 650, the
// paper's "10 %").
#pragma once

#include <memory>
#include <set>
#include <string>

#include "kvcache/policy.h"
#include "kvcache/selection.h"  // kScaleKVWindow

namespace skv {

struct KVOptions {
  std::string policy = "full";
  std::string budget;          // "10%" or tokens; empty: 10% (or the budget table's base capacity)
  std::string budget_table;    // --kv-budget-table
  std::string scoring = "reference";
  std::string calibration = "auto";  // auto: table when --kv-budget-table is given, else online
  int window = 0;              // observation window; 0: the model's (KVModelInfo::window)
  int drafters = 0;            // ScaleKV drafters per scale (0: ceil(depth / 16))
  int sinks = 4;               // streamingllm
  double pyramid_beta = 20.0;  // pyramidkv
  // The options given on the command line (launcher/kv_options.h's add_kv_options fills it): an option that the chosen policy
  // would ignore is an error where ignoring it changes what the user gets (--kv-budget with full), a
  // warning where it is harmless (--kv-window with sliding-window).
  std::set<std::string> given;
};
// Checks the options on their own (no model needed): the policy name, values out of range, options the
// policy would ignore. make_kv_policy calls it; commands call it first to fail before loading anything.
void check_kv_options(const KVOptions& o);

// What a policy needs to know about the model it serves.
struct KVModelInfo {
  int depth = 0;
  int num_heads = 0;
  Schedule schedule;
  int window = kScaleKVWindow;  // the model's default observation window (config key kv_window; 16 as released)
};

// "full, sliding-window, streamingllm, snapkv, pyramidkv, scalekv"
std::string kv_policy_names();
// Tokens per layer for a budget spec ("10%", "0.5%", "650") and a schedule; one-line errors otherwise.
int64_t resolve_kv_budget(const std::string& spec, const Schedule& schedule);
// The share rounding used for percentages: x rounded up to two significant digits (x > 0).
int64_t round_up_2_significant(double x);

std::unique_ptr<KVPolicy> make_kv_policy(const KVOptions& o, const KVModelInfo& m);

}  // namespace skv
