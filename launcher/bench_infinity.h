// bench_infinity.h - the Infinity half of `scalekv bench`: random weights of a config's shape (e.g.
// configs/infinity-2b.json; depth can be cut for time), random prompt embeddings, one resolution /
// aspect ratio / batch / KV policy, several repeats; prints a markdown table with the median time per
// scale, the total, the measured KV peak and the peak memory per category (weights, kv, activations,
// workspace). Never asserts times. scripts/bench/infinity_torch_ref.py times the same shapes in PyTorch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "launcher/kv_options.h"

namespace skv {

class Backend;

struct InfinityBenchOptions {
  std::string config = "configs/infinity-2b.json";  // any Infinity model config: only its shape is used
  int resolution = 1024;                            // 256, 512, 768, 1024
  double h_div_w = 1.0;
  int batch = 1;                                    // images; CFG doubles the rows
  std::vector<int> batches;                         // several batch sizes on one model (else `batch`)
  int depth = 0;                                    // > 0: run only this many blocks (reported)
  int repeats = 3;                                  // timed runs (median reported) after one warm-up
  bool warmup = true;
  int text_len = 32;                                // tokens per random prompt
  bool decode = false;                              // also time the BSQ-VAE decoder
  std::string device = "cpu";
  Backend* backend = nullptr;                       // the rank's backend from make_context (its weight dtype
                                                    // set); null: backend_for(device) with F32 weights
  KVOptions kv;                                     // the policy under test (default full)
  uint64_t seed = 0;
  std::string command;                              // the command line, printed with the table
  std::string md_out;                               // also write the table to this file (atomically)
  std::string* md_collect = nullptr;                // or append it here (the caller writes one file)
};

// Prints one table per batch size to stdout; returns the median total transformer seconds of the last.
double run_infinity_bench(const InfinityBenchOptions& o);

}  // namespace skv
