// kv_bench.h - what the KV benchmarks (fidelity, memory) need from a model, independent of its family:
// its shape for the policies, the bytes of one cached token, and a function that runs one request with
// a policy. make_var_kv_bench_model provides it for VAR; any model whose generation loop goes through
// MultiScaleKVCache (Infinity) plugs in the same way.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>

#include "launcher/context.h"
#include "launcher/kv_options.h"
#include "launcher/var_bundle.h"

namespace skv {

struct KVBenchModel {
  std::string description;
  KVModelInfo info;
  int64_t token_bytes = 0;  // one token of one layer on this rank (K + V as allocated)
  bool output_rank = true;  // prints the tables
  // One request: the same seed gives the same sampling stream whatever the policy.
  std::function<GenerateResult(KVPolicy& policy, uint64_t seed, bool decode)> run;
};

struct KVBenchModelArgs {
  ModelFiles files;
  bool random = false;
  uint64_t weight_seed = 0;
  std::string patch_nums;  // random weights: another schedule, e.g. 1,2,4,6,8,12,16,20,24,32,40,48,64
  std::string labels = "0-3";
  double cfg = -1;
  float top_p = -1;
  int top_k = -1;
  ContextArgs ctx;
};
void add_kv_bench_model_options(CLI::App* cmd, KVBenchModelArgs& a);

// Holds the loaded model (and its context) for as long as the bench model is used.
struct KVBenchHolder {
  RunContext ctx;
  std::unique_ptr<VarBundle> var;
  KVBenchModel model;
};
std::unique_ptr<KVBenchHolder> make_var_kv_bench_model(const KVBenchModelArgs& a);

// "AMD EPYC ..., 2 threads, NDEBUG build" for benchmark headers.
std::string bench_machine_line();
std::vector<std::string> split_list(const std::string& s);  // "a,b , c" -> {a, b, c}
std::string current_command_line();  // this process's argv, space separated (for benchmark headers)

}  // namespace skv
