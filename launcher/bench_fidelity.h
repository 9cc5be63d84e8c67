// bench_fidelity.h - the fidelity benchmark (`scalekv bench --fidelity`): the same seeds with the full
// cache and with each policy at each budget; per policy and budget the token agreement with the full
// run per scale, PSNR and SSIM of the decoded images against the full-cache images, the measured KV
// peak and the transformer time, as a markdown table. Free-running: a token that differs changes
// everything after it, which is what a user sees. Model-agnostic through KVBenchModel (kv_bench.h).
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "launcher/kv_bench.h"

namespace skv {

struct FidelityOptions {
  KVBenchModelArgs model;
  std::string seeds = "0,1";
  std::string policies = "sliding-window,streamingllm,snapkv,pyramidkv,scalekv";
  std::string budgets = "4%,10%,20%";
  KVOptions kv;        // scoring, window, budget table (policy and budget are set per row)
  std::string out;     // also write the markdown table here
};
void add_fidelity_options(CLI::App* cmd, FidelityOptions& o);

struct FidelityRow {
  std::string policy, budget;
  int64_t budget_tokens = 0;
  std::vector<double> agreement;  // per scale, mean over seeds
  double psnr = 0, ssim = 0;      // mean over images and seeds (identical images count as 100 dB)
  int64_t kv_peak = 0;
  double kv_share = 0;            // of the full run's measured peak
  double seconds = 0;             // median transformer time per request
};

// Rows for `m` (the first row is the full cache itself).
std::vector<FidelityRow> measure_fidelity(const KVBenchModel& m, const std::vector<uint64_t>& seeds,
                                          const std::vector<std::string>& policies,
                                          const std::vector<std::string>& budgets, const KVOptions& kv);
std::string fidelity_markdown(const std::vector<FidelityRow>& rows, const std::string& model, const std::string& command,
                              size_t seeds);

// The whole benchmark for a VAR model; returns the exit status.
int run_fidelity_bench(const FidelityOptions& o, const std::string& command);

}  // namespace skv
