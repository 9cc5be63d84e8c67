// bench_cuda.cpp - GPU-only benchmark figures (bench_cuda.h). The reference numbers (HBM peak from the
// device attributes, copy bandwidth and cuBLAS peak measured here) are taken in the same run as the
// model, so a fraction is always of this card, this driver, this clock state.
#include "launcher/bench_cuda.h"

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <ctime>

#include "runtime/backend.h"
#include "runtime/check.h"
#ifdef SKV_HAVE_CUDA
#include "runtime/cuda/cuda_device.h"
#endif

namespace skv {

std::vector<std::pair<int64_t, int64_t>> attention_shapes(const KVPolicy& policy, const Schedule& schedule, int depth) {
  std::vector<int64_t> len(static_cast<size_t>(depth), 0);
  std::vector<std::pair<int64_t, int64_t>> out;
  for (int s = 0; s < schedule.num_scales(); ++s) {
    const int64_t l = schedule.tokens(s);
    int64_t keys = 0;
    for (int i = 0; i < depth; ++i) keys += len[i] + l;
    out.emplace_back(l, depth > 0 ? keys / depth : l);
    for (int i = 0; i < depth; ++i) len[i] = std::min(len[i] + l, policy.budget(i, s, len[i] + l));
  }
  return out;
}

CudaBenchReport::CudaBenchReport(DType weight_dtype) : wdt_(weight_dtype) {
#ifdef SKV_HAVE_CUDA
  available_ = cuda_available(&why_);
  if (!available_) return;
  const cuda::DeviceInfo d = cuda::device_info();
  device_ = fmt::format("{} (device {}, sm_{}{}, {} SMs, {:.1f} GiB, driver {}, runtime {})", d.name, d.index, d.cc_major,
                        d.cc_minor, d.sms, d.total_bytes / double(1 << 30), d.driver, d.runtime);
  hbm_peak_gbs_ = d.hbm_peak_gbs;
  copy_gbs_ = cuda::measure_copy_gbs(int64_t{1} << 30, 5);
  gemm_peak_tflops_ = cuda::measure_gemm_tflops(wdt_, 8192, 5);
  sgemm_peak_tflops_ = wdt_ == DType::F32 ? gemm_peak_tflops_ : cuda::measure_gemm_tflops(DType::F32, 8192, 3);
#else
  why_ = "this build has no CUDA backend";
#endif
}

void CudaBenchReport::profile(const std::string& label, const std::function<void()>& one_generation) {
  if (!available_) return;
#ifdef SKV_HAVE_CUDA
  cuda::profile_begin();
  try {
    one_generation();
  } catch (...) {
    cuda::profile_end();
    throw;
  }
  std::map<std::string, Op> ops;
  for (const auto& [name, t] : cuda::profile_end()) ops[name] = {t.calls, t.seconds, t.flops, t.bytes};
  profiles_.emplace_back(label, std::move(ops));
#endif
}

void CudaBenchReport::attention_sweep(const std::string& label, int64_t rows, int64_t heads, int64_t head_dim,
                                      const std::vector<std::pair<int64_t, int64_t>>& q_and_kv) {
  if (!available_) return;
#ifdef SKV_HAVE_CUDA
  Sweep s{label, {}, rows, heads, head_dim, q_and_kv, {}, {}};
  const bool tc = cuda::attention_uses_tensor_cores(head_dim, wdt_);  // the kernel the model runs with
  s.kernel = tc ? "bf16 tensor-core kernel" : "FP32 kernel";
  for (const auto& [lq, kv] : q_and_kv) {
    const cuda::AttnTiming t = cuda::measure_attention(rows, heads, lq, kv, head_dim, 5, tc);
    s.seconds.push_back(t.seconds);
    s.bytes.push_back(t.bytes);
  }
  sweeps_.push_back(std::move(s));
#endif
}

std::string CudaBenchReport::markdown() const {
  if (!available_) return fmt::format("\nGPU figures: not available ({}).\n", why_);
  std::string md;
  auto out = [&](const std::string& s) { md += s; };
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
  out(fmt::format("\n#### GPU figures ({}, {})\n\n", device_, date));
  out(fmt::format("- HBM peak (memory clock x bus width): {:.0f} GB/s; device-to-device copy measured now: {:.0f} GB/s "
                  "({:.0f} % of peak)\n", hbm_peak_gbs_, copy_gbs_, 100 * copy_gbs_ / hbm_peak_gbs_));
  out(fmt::format("- cuBLAS GEMM peak measured now (8192^3, {} inputs, FP32 accumulation): {:.1f} TFLOP/s; FP32 SGEMM "
                  "(no TF32): {:.1f} TFLOP/s\n", dtype_name(wdt_), gemm_peak_tflops_, sgemm_peak_tflops_));
  if (!profiles_.empty()) {
    out("\nOne generation, op by op (GPU time from cudaEvents around each op; event overhead included):\n\n"
        "| run | op | calls | GPU s | share | TFLOP/s | of cuBLAS peak | GB/s | of HBM peak |\n"
        "|---|---|---|---|---|---|---|---|---|\n");
    for (const auto& [label, ops] : profiles_) {
      double total = 0;
      for (const auto& [name, o] : ops) total += o.seconds;
      std::vector<std::pair<std::string, Op>> sorted(ops.begin(), ops.end());
      std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
      for (const auto& [name, o] : sorted) {
        const double tf = o.seconds > 0 ? o.flops / o.seconds / 1e12 : 0, gbs = o.seconds > 0 ? o.bytes / o.seconds / 1e9 : 0;
        const double peak = name == "linear" ? gemm_peak_tflops_ : sgemm_peak_tflops_;
        out(fmt::format("| {} | {} | {} | {:.4f} | {:.0f} % | {} | {} | {:.0f} | {:.0f} % |\n", label, name, o.calls,
                        o.seconds, total > 0 ? 100 * o.seconds / total : 0, o.flops > 0 ? fmt::format("{:.1f}", tf) : "-",
                        o.flops > 0 ? fmt::format("{:.0f} %", 100 * tf / peak) : "-", gbs, 100 * gbs / hbm_peak_gbs_));
      }
    }
    out("\n(linear: fraction of the cuBLAS peak for the weight dtype; other ops: of the FP32 SGEMM peak (the bf16 "
        "tensor-core attention can exceed it). GB/s counts the bytes each op must move at least.)\n");
  }
  for (const auto& s : sweeps_) {
    out(fmt::format("\nAttention alone ({}), {} ({} rows x {} heads, head_dim {}, F32 K/V in memory), median of 5:\n\n"
                    "| scale | queries | keys | ms | GB/s | of HBM peak |\n|---|---|---|---|---|---|\n",
                    s.kernel, s.label, s.rows, s.heads, s.head_dim));
    for (size_t i = 0; i < s.shapes.size(); ++i) {
      const double gbs = s.bytes[i] / s.seconds[i] / 1e9;
      out(fmt::format("| {} | {} | {} | {:.3f} | {:.0f} | {:.0f} % |\n", i, s.shapes[i].first, s.shapes[i].second,
                      1e3 * s.seconds[i], gbs, 100 * gbs / hbm_peak_gbs_));
    }
  }
  return md;
}

}  // namespace skv
