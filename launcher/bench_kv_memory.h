// bench_kv_memory.h - the KV memory benchmark: for each policy, one request with the accounting
// allocator's KV category reset, comparing the measured peak (persistent pool + transient buffers)
// with the plan and with the same measurement under the full cache. It answers the design's two
// numbers: the compressed peak as a share of the full one (ScaleKV at 10 %: at most 12.5 %) and the
// plan's error (within 1 %). Model-agnostic: pass any KVBenchModel (kv_bench.h).
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "launcher/kv_bench.h"

namespace skv {

struct KVMemoryRow {
  std::string policy, budget;
  int64_t budget_tokens = 0;
  int64_t planned = 0, measured = 0;
  double share_of_full = 0;  // measured / measured with full
  double plan_error = 0;     // (measured - planned) / planned
  int64_t capped = 0;
  double seconds = 0;
};

struct KVMemoryOptions {
  KVBenchModelArgs model;
  std::string policies = "full,sliding-window,streamingllm,snapkv,pyramidkv,scalekv";
  std::string budget = "10%";
  KVOptions kv;             // scoring, window, ... (policy and budget are set per row)
  uint64_t seed = 0;
  std::string out;          // also write the markdown table here
  bool check = false;       // exit non-zero unless scalekv <= 12.5 % of full and every plan within 1 %
};
void add_kv_memory_options(CLI::App* cmd, KVMemoryOptions& o);

// The rows (full first) for a model; `kv` gives the shared policy options.
std::vector<KVMemoryRow> measure_kv_memory(const KVBenchModel& m, const std::vector<std::string>& policies,
                                           const std::string& budget, const KVOptions& kv, uint64_t seed);
std::string kv_memory_markdown(const std::vector<KVMemoryRow>& rows, const std::string& model,
                               const std::string& command);
// Returns false (and says why on stderr) when the design's criterion fails.
bool kv_memory_criterion(const std::vector<KVMemoryRow>& rows, std::string* verdict);

// The whole benchmark for a VAR model (what `scalekv bench --kv-memory` runs); returns the exit status.
int run_kv_memory_bench(const KVMemoryOptions& o, const std::string& command);

}  // namespace skv
