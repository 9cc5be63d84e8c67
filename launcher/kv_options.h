// kv_options.h - the KV-cache policy options on the command line of generate, bench, plan, calibrate
// and serve. What they mean, their checks and the policy factory are kvcache/policy_factory.h's.
#pragma once

#include <CLI/CLI.hpp>

#include "engine/engine.h"
#include "kvcache/policy_factory.h"

namespace skv {

// --kv-policy, --kv-budget, --kv-budget-table, --scalekv-scoring/-calibration/-drafters, --kv-window,
// --kv-sinks; records the ones given in KVOptions::given.
void add_kv_options(CLI::App* cmd, KVOptions& o);

// A memory size option (--kv-memory): bytes, or a number with KiB/MiB/GiB/TiB (also K/M/G/T) or
// KB/MB/GB/TB; a one-line error naming `option` otherwise. Positive and below 2^63.
int64_t parse_byte_size(const std::string& text, const std::string& option);

// The engine's --mode, --kv-memory and/or --device-memory (one at least) and --max-step-tokens (bench serve,
// serve), each checked, errors naming the option.
EngineOptions parse_engine_options(const std::string& mode, const std::string& kv_memory, int64_t max_step_tokens,
                                   const std::string& device_memory = "");
// "--kv-memory X", "--device-memory Y" or both: the options an admission error names.
std::string memory_options(const std::string& kv_memory, const std::string& device_memory);
// After a run with --device-memory: "; device memory D: R resident, requests admitted into C, measured peak P"
// (empty without it).
std::string device_memory_summary(const EngineStats& s);

}  // namespace skv
