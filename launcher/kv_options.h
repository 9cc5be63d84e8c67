// kv_options.h - the KV-cache policy options on the command line of generate, bench, plan, calibrate
// and serve. What they mean, their checks and the policy factory are kvcache/policy_factory.h's.
#pragma once

#include <CLI/CLI.hpp>

#include "kvcache/policy_factory.h"

namespace skv {

// --kv-policy, --kv-budget, --kv-budget-table, --scalekv-scoring/-calibration/-drafters, --kv-window,
// --kv-sinks; records the ones given in KVOptions::given.
void add_kv_options(CLI::App* cmd, KVOptions& o);

}  // namespace skv
