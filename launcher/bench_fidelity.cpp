// bench_fidelity.cpp - compressed vs full cache: tokens, PSNR, SSIM, KV peak, time (see bench_fidelity.h).
#include "launcher/bench_fidelity.h"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <fstream>

#include "launcher/image_metrics.h"
#include "launcher/progress.h"
#include "runtime/check.h"
#include "runtime/file_io.h"

namespace skv {

void add_fidelity_options(CLI::App* cmd, FidelityOptions& o) {
  add_kv_bench_model_options(cmd, o.model);
  cmd->add_option("--seeds", o.seeds, "Sampling seeds (one request each)")->capture_default_str();
  cmd->add_option("--policies", o.policies, "Policies compared with the full cache")->capture_default_str();
  cmd->add_option("--budgets", o.budgets, "Budgets of every policy")->capture_default_str();
  cmd->add_option("--scalekv-scoring", o.kv.scoring, "ScaleKV scoring: reference or paper")->capture_default_str();
  cmd->add_option("--kv-budget-table", o.kv.budget_table, "ScaleKV budget table (else online calibration)");
  cmd->add_option("--kv-window", o.kv.window, "Observation window (default: the config's kv_window, else 16)");
  cmd->add_option("--kv-sinks", o.kv.sinks, "StreamingLLM sink tokens")->capture_default_str();
  cmd->add_option("--out", o.out, "Also write the markdown table to this file");
}

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct FullRun {
  std::vector<std::vector<int64_t>> tokens;
  std::vector<std::vector<uint8_t>> rgb;
  int w = 0, h = 0;
};

}  // namespace

std::vector<FidelityRow> measure_fidelity(const KVBenchModel& m, const std::vector<uint64_t>& seeds,
                                          const std::vector<std::string>& policies,
                                          const std::vector<std::string>& budgets, const KVOptions& kv) {
  SKV_CHECK(!seeds.empty(), "--seeds: at least one seed");
  const int S = m.info.schedule.num_scales();
  std::vector<FullRun> full(seeds.size());
  FidelityRow base;
  base.policy = "full";
  base.budget = "100%";
  base.budget_tokens = m.info.schedule.cached_before_last();
  base.agreement.assign(S, 1.0);
  base.psnr = 100;
  base.ssim = 1;
  base.kv_share = 1;
  std::vector<double> times;
  Progress prog("fidelity");
  for (size_t i = 0; i < seeds.size(); ++i) {
    prog.update(fmt::format("full, seed {}", seeds[i]));
    auto pol = make_full_policy();
    const GenerateResult r = m.run(*pol, seeds[i], true);
    full[i].tokens = r.tokens;
    full[i].rgb = images_to_rgb8(r.images);
    full[i].h = static_cast<int>(r.images.dim(2));
    full[i].w = static_cast<int>(r.images.dim(3));
    base.kv_peak = std::max(base.kv_peak, r.kv_peak_bytes);
    times.push_back(r.transformer_seconds);
  }
  base.seconds = median(times);
  std::vector<FidelityRow> rows{base};
  for (const auto& p : policies)
    for (const auto& b : budgets) {
      KVOptions o = kv;
      o.policy = p;
      o.budget = b;
      if (p != "scalekv") o.budget_table.clear();
      FidelityRow row;
      row.policy = p;
      row.budget = b;
      row.budget_tokens = resolve_kv_budget(b, m.info.schedule);
      row.agreement.assign(S, 0.0);
      double psnr = 0, ssim = 0;
      int64_t images = 0;
      times.clear();
      for (size_t i = 0; i < seeds.size(); ++i) {
        auto pol = make_kv_policy(o, m.info);
        prog.update(fmt::format("{} {}, seed {}", p, b, seeds[i]));
        const GenerateResult r = m.run(*pol, seeds[i], true);
        for (int si = 0; si < S; ++si) {
          const auto& a = r.tokens[si];
          const auto& f = full[i].tokens[si];
          int64_t same = 0;
          for (size_t j = 0; j < a.size(); ++j) same += a[j] == f[j];
          row.agreement[si] += static_cast<double>(same) / static_cast<double>(a.size()) / seeds.size();
        }
        const auto rgb = images_to_rgb8(r.images);
        for (size_t k = 0; k < rgb.size(); ++k, ++images) {
          psnr += std::min(100.0, psnr_rgb8(rgb[k], full[i].rgb[k]));
          ssim += ssim_rgb8(rgb[k], full[i].rgb[k], full[i].w, full[i].h);
        }
        row.kv_peak = std::max(row.kv_peak, r.kv_peak_bytes);
        times.push_back(r.transformer_seconds);
      }
      row.psnr = psnr / images;
      row.ssim = ssim / images;
      row.kv_share = static_cast<double>(row.kv_peak) / static_cast<double>(base.kv_peak);
      row.seconds = median(times);
      rows.push_back(row);
    }
  prog.done(fmt::format("{} rows", rows.size()));
  return rows;
}

std::string fidelity_markdown(const std::vector<FidelityRow>& rows, const std::string& model, const std::string& command,
                              size_t seeds) {
  std::string o;
  o += fmt::format("Fidelity vs the full cache: {}\n\nmachine: {}\ncommand: {}\nseeds: {} (free-running; PSNR/SSIM of "
                   "8-bit images against the full-cache images, identical images count as 100 dB; time: median "
                   "transformer seconds per request)\n\n",
                   model, bench_machine_line(), command, seeds);
  o += "| policy | budget | tokens/layer | token agreement per scale | mean agreement | PSNR (dB) | SSIM | KV peak (MiB) | share of full | time (s) |\n";
  o += "|---|---|---:|---|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& r : rows) {
    std::string per;
    double mean = 0;
    for (double a : r.agreement) {
      per += fmt::format("{}{:.2f}", per.empty() ? "" : " ", a);
      mean += a / r.agreement.size();
    }
    o += fmt::format("| {} | {} | {} | {} | {:.3f} | {:.2f} | {:.4f} | {:.2f} | {:.1f}% | {:.2f} |\n", r.policy, r.budget,
                     r.budget_tokens, per, mean, r.psnr, r.ssim, r.kv_peak / (1024.0 * 1024.0), 100 * r.kv_share,
                     r.seconds);
  }
  return o;
}

int run_fidelity_bench(const FidelityOptions& o, const std::string& command) {
  if (!o.out.empty()) check_output_file(o.out, "--out");  // before the work, not after it
  auto h = make_var_kv_bench_model(o.model);
  std::vector<uint64_t> seeds;
  for (const auto& s : split_list(o.seeds)) {
    size_t used = 0;
    uint64_t v = 0;
    try {
      v = std::stoull(s, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    SKV_CHECK(used == s.size(), "--seeds '{}': '{}' is not a non-negative integer", o.seeds, s);
    seeds.push_back(v);
  }
  const auto rows = measure_fidelity(h->model, seeds, split_list(o.policies), split_list(o.budgets), o.kv);
  if (!h->model.output_rank) return 0;
  const std::string md = fidelity_markdown(rows, h->model.description, command, seeds.size());
  fmt::print("{}", md);
  if (!o.out.empty()) {
    write_file_atomic(o.out, md);
  }
  return 0;
}

}  // namespace skv
