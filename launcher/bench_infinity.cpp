#include "launcher/bench_infinity.h"

#include <fmt/core.h>
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <fstream>
#include <random>

#include "launcher/bench_cuda.h"
#include "parallel/communicator.h"
#include "runtime/check.h"
#include "runtime/file_io.h"
#include "runtime/models/infinity_generate.h"
#include "runtime/models/model_bundle.h"

namespace skv {

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string cpu_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) {
      const auto p = line.find(':');
      if (p != std::string::npos) return line.substr(p + 2);
    }
  return "unknown CPU";
}

double cpu_seconds() {  // user + system time of every thread of the process
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

double loadavg() {
  std::ifstream f("/proc/loadavg");
  double l = 0;
  f >> l;
  return l;
}

std::string mib(int64_t b) { return fmt::format("{:.1f}", static_cast<double>(b) / (1024.0 * 1024.0)); }

}  // namespace

double run_infinity_bench(const InfinityBenchOptions& o) {
  InfinityConfig cfg = InfinityConfig::load(o.config);
  const int full_depth = cfg.depth;
  if (o.depth > 0) {
    SKV_CHECK(o.depth <= cfg.depth, "--depth {} is deeper than the model ({})", o.depth, cfg.depth);
    cfg.depth = o.depth;
    cfg.block_chunks = 1;
  }
  SKV_CHECK(o.repeats >= 1 && o.text_len >= 1, "bench: repeats and text length must be >= 1");
  const Schedule sched = infinity_schedule_for(o.h_div_w, o.resolution);
  Backend& be = o.backend ? *o.backend : backend_for(o.device);
  auto comm = make_local_communicator();
  Allocator& alloc = be.allocator();
  const auto loaded = load_infinity(cfg, WeightSource::random_weights(o.seed), be, *comm);
  const InfinityModel& model = *loaded->model;
  const std::unique_ptr<BsqVae>& vae = loaded->vae;
  auto policy = make_kv_policy(o.kv, {cfg.depth, cfg.num_heads, sched});

  // One model for every batch size (building 2B random weights takes ~35 s of host time).
  const std::vector<int> batches = o.batches.empty() ? std::vector<int>{o.batch} : o.batches;
  double last_total = 0;
  std::string all_md;  // every batch's tables (and the GPU figures), collected or written once at the end
  // GPU-only figures, as the VAR bench: per-op kernel times (GEMM vs the cuBLAS peak) and the attention
  // kernel alone per scale (bandwidth vs HBM peak).
  std::unique_ptr<CudaBenchReport> gpu;
  if (be.device() == Device::CUDA) gpu = std::make_unique<CudaBenchReport>(be.weight_dtype());
  for (int B : batches) {
    SKV_CHECK(B >= 1, "bench: batch {} must be >= 1", B);
    InfinityRequest req = infinity_request_defaults(cfg, sched);
    req.text.lens.assign(B, o.text_len);
    req.text.kv_compact = Tensor::empty({static_cast<int64_t>(B) * o.text_len, cfg.text_channels});
    std::mt19937 g(static_cast<uint32_t>(o.seed));
    std::normal_distribution<float> nd(0.0f, 0.3f);
    for (int64_t i = 0; i < req.text.kv_compact.numel(); ++i) req.text.kv_compact.f32()[i] = nd(g);

    const int S = sched.num_scales();
    std::vector<std::vector<double>> per_scale(S), cpu_scale(S);
    std::vector<double> totals, cpu_totals, decodes, loads;
    std::vector<int64_t> kv_tokens(S, 0);
    int64_t kv_peak = 0, kv_store = 0;
    MemStats peak{};
    for (int rep = 0; rep < o.repeats + (o.warmup ? 1 : 0); ++rep) {
      const bool timed = !o.warmup || rep > 0;
      alloc.reset_peaks();
      InfinityRunOptions opt;
      opt.policy = policy.get();
      opt.decode = o.decode;
      std::vector<double> cpu_at(S + 1, 0.0);
      cpu_at[0] = cpu_seconds();
      opt.progress = [&](int si, int, double) { cpu_at[si + 1] = cpu_seconds(); };
      loads.push_back(loadavg());
      const GenerateResult r = infinity_generate(model, *vae, req, opt);
      if (!timed) continue;
      for (int si = 0; si < S; ++si) cpu_scale[si].push_back(cpu_at[si + 1] - cpu_at[si]);
      cpu_totals.push_back(cpu_at[S] - cpu_at[0]);
      const MemStats st = alloc.stats();
      for (int c = 0; c < kNumMemCategories; ++c) peak.peak[c] = std::max(peak.peak[c], st.peak[c]);
      peak.total_peak = std::max(peak.total_peak, st.total_peak);
      for (int si = 0; si < S; ++si) {
        per_scale[si].push_back(r.timings[si].seconds);
        kv_tokens[si] = r.timings[si].kv_store_tokens;
      }
      totals.push_back(r.transformer_seconds);
      decodes.push_back(r.decode_seconds);
      kv_peak = std::max(kv_peak, r.kv_peak_bytes);
      kv_store = r.kv_store_bytes;
    }
    const int last = S - 1;
    const int img_h = sched[last].h * cfg.patch_factor() * cfg.vae.patch_size;
    const int img_w = sched[last].w * cfg.patch_factor() * cfg.vae.patch_size;
  #ifdef NDEBUG
    const char* build = "optimised (NDEBUG)";
  #else
    const char* build = "debug (assertions on)";
  #endif
    std::string md;
    md += fmt::format("\n### scalekv Infinity: {} shape (width {}, {} heads, depth {} of {}), {}x{} (h/w {}), batch {} "
               "(+CFG: {} rows), KV policy {}\n\n", cfg.name, cfg.embed_dim, cfg.num_heads, cfg.depth, full_depth, img_w,
               img_h, o.h_div_w, B, 2 * B, policy->name());
    md += fmt::format("machine: {}, {} OpenMP threads; backend {}; build {}; random weights ({} linear weights, {} "
               "compute); text {} tokens/prompt; median of {} run(s){}; load average at the starts: {:.1f}\n", cpu_name(),
               omp_get_max_threads(), be.name(), build, dtype_name(be.weight_dtype()), dtype_name(be.compute_dtype()),
               o.text_len, o.repeats, o.warmup ? " after 1 warm-up" : "", median(loads));
    if (!o.command.empty()) md += fmt::format("command: `{}`\n", o.command);
    md += fmt::format("\n| scale | tokens | time (s) | CPU time, all threads (s) | KV stored after (tokens, all layers) |\n"
               "|---:|---:|---:|---:|---:|\n");
    for (int si = 0; si < S; ++si)
      md += fmt::format("| {} | {}x{} | {:.4f} | {:.4f} | {} |\n", si, sched[si].h, sched[si].w, median(per_scale[si]),
                 median(cpu_scale[si]), kv_tokens[si]);
    md += fmt::format("| **total** | {} | **{:.3f}** | **{:.3f}** | |\n", sched.total(), median(totals), median(cpu_totals));
    if (o.decode) md += fmt::format("| decoder | {}x{} px | {:.3f} | | |\n", img_w, img_h, median(decodes));
    md += fmt::format("\n| memory (MiB) | weights | kv (measured peak) | kv store capacity | activations peak | workspace peak | "
               "all peak |\n|---|---:|---:|---:|---:|---:|---:|\n");
    md += fmt::format("| {} | {} | {} | {} | {} | {} | {} |\n", be.name(), mib(peak.pk(MemCategory::Weights)), mib(kv_peak),
               mib(kv_store), mib(peak.pk(MemCategory::Activations)), mib(peak.pk(MemCategory::Workspace)),
               mib(peak.total_peak));
    md += fmt::format("\nKV measured peak: {} bytes (store capacity {} bytes)\n", kv_peak, kv_store);
    fmt::print("{}", md);
    all_md += md;
    last_total = median(totals);
    if (gpu) {
      InfinityRunOptions popt;
      popt.policy = policy.get();
      popt.decode = false;
      gpu->profile(fmt::format("batch {}", B), [&] { infinity_generate(model, *vae, req, popt); });
      gpu->attention_sweep(fmt::format("batch {}", B), 2 * B, model.local_heads(), cfg.head_dim(),
                           attention_shapes(*policy, sched, cfg.depth));
    }
  }
  if (gpu) {
    const std::string g = gpu->markdown();
    fmt::print("{}", g);
    all_md += g;
  }
  if (o.md_collect) *o.md_collect += all_md;
  else if (!o.md_out.empty()) write_file_atomic(o.md_out, all_md);
  return last_total;
}

}  // namespace skv
