// bench_cuda.h - the figures of `scalekv bench --device cuda` that only a GPU run has: the device and
// its HBM peak, reference measurements taken in the same run (device-to-device copy bandwidth, cuBLAS
// GEMM peak for the weight dtype), per-op GPU time of one generation (GEMM TFLOP/s as a fraction of
// that cuBLAS peak, attention GB/s as a fraction of HBM peak), and the attention kernel alone at each
// scale's shape for the cache lengths a KV policy leaves. In a build without CUDA every section says so.
//
// Use (cmd_bench.cpp):
//   CudaBenchReport gpu(be.weight_dtype());                       // once, after the model is loaded
//   gpu.profile("batch 8", [&] { var_generate(model, vae, req, opt); });
//   gpu.attention_sweep("batch 8", 2 * B, model.local_heads(), cfg.head_dim(),
//                       attention_shapes(*policy, cfg.schedule(), cfg.depth));
//   md += gpu.markdown();
#pragma once

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "kvcache/policy.h"
#include "runtime/dtype.h"

namespace skv {

// Per scale: (query tokens, keys attended = mean over layers of the store length before the scale +
// the scale's tokens) under `policy`.
std::vector<std::pair<int64_t, int64_t>> attention_shapes(const KVPolicy& policy, const Schedule& schedule, int depth);

class CudaBenchReport {
 public:
  explicit CudaBenchReport(DType weight_dtype);
  // Runs `one_generation` once with per-op GPU timing (cudaEvents around each op) under `label`.
  void profile(const std::string& label, const std::function<void()>& one_generation);
  // The attention kernel alone, per scale: rows x heads x (Lq queries over kv keys) of head_dim.
  void attention_sweep(const std::string& label, int64_t rows, int64_t heads, int64_t head_dim,
                       const std::vector<std::pair<int64_t, int64_t>>& q_and_kv);
  std::string markdown() const;

 private:
  struct Op {
    int64_t calls = 0;
    double seconds = 0, flops = 0, bytes = 0;
  };
  struct Sweep {
    std::string label, kernel;
    int64_t rows = 0, heads = 0, head_dim = 0;
    std::vector<std::pair<int64_t, int64_t>> shapes;
    std::vector<double> seconds, bytes;
  };
  bool available_ = false;
  std::string why_;
  DType wdt_;
  std::string device_;
  double hbm_peak_gbs_ = 0, copy_gbs_ = 0, gemm_peak_tflops_ = 0, sgemm_peak_tflops_ = 0;
  std::vector<std::pair<std::string, std::map<std::string, Op>>> profiles_;
  std::vector<Sweep> sweeps_;
};

}  // namespace skv
