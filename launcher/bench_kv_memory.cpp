// bench_kv_memory.cpp - measured vs planned KV peak per policy (see bench_kv_memory.h).
#include "launcher/bench_kv_memory.h"

#include <fmt/core.h>

#include <fstream>

#include "kvcache/planner.h"
#include "launcher/progress.h"
#include "runtime/check.h"
#include "runtime/file_io.h"

namespace skv {

void add_kv_memory_options(CLI::App* cmd, KVMemoryOptions& o) {
  add_kv_bench_model_options(cmd, o.model);
  cmd->add_option("--policies", o.policies, "Policies to measure (full is always measured first)")->capture_default_str();
  cmd->add_option("--kv-budget", o.budget, "Budget of every compressed policy")->capture_default_str();
  cmd->add_option("--scalekv-scoring", o.kv.scoring, "ScaleKV scoring: reference or paper")->capture_default_str();
  cmd->add_option("--kv-budget-table", o.kv.budget_table, "ScaleKV budget table (else online calibration)");
  cmd->add_option("--seed", o.seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--out", o.out, "Also write the markdown table to this file");
  cmd->add_flag("--check", o.check, "Exit 1 unless scalekv's peak <= 12.5% of full and every plan is within 1%");
}

std::vector<KVMemoryRow> measure_kv_memory(const KVBenchModel& m, const std::vector<std::string>& policies,
                                           const std::string& budget, const KVOptions& kv, uint64_t seed) {
  std::vector<std::string> names{"full"};
  for (const auto& p : policies)
    if (p != "full") names.push_back(p);
  std::vector<KVMemoryRow> rows;
  Progress prog("kv-memory");
  for (const auto& name : names) {
    KVOptions o = kv;
    o.policy = name;
    o.budget = name == "full" ? "" : budget;
    if (name != "scalekv") o.budget_table.clear();
    auto policy = make_kv_policy(o, m.info);
    prog.update(fmt::format("{} ({} of {})", name, rows.size() + 1, names.size()));
    const GenerateResult r = m.run(*policy, seed, false);
    KVMemoryRow row;
    row.policy = name;
    row.budget = name == "full" ? "-" : budget;
    row.budget_tokens = name == "full" ? m.info.schedule.cached_before_last() : resolve_kv_budget(budget, m.info.schedule);
    row.planned = r.kv_planned_peak_bytes;
    row.measured = r.kv_peak_bytes;
    row.plan_error = row.planned > 0 ? static_cast<double>(row.measured - row.planned) / row.planned : 0;
    row.share_of_full = rows.empty() ? 1.0 : static_cast<double>(row.measured) / rows.front().measured;
    row.capped = r.kv_capped;
    row.seconds = r.transformer_seconds;
    rows.push_back(row);
  }
  prog.done(fmt::format("{} policies", rows.size()));
  return rows;
}

std::string kv_memory_markdown(const std::vector<KVMemoryRow>& rows, const std::string& model,
                               const std::string& command) {
  std::string o;
  o += fmt::format("KV memory: {}\n\nmachine: {}\ncommand: {}\n\n", model, bench_machine_line(), command);
  o += "| policy | budget | tokens/layer | planned peak (bytes) | measured peak (bytes) | plan error | share of full | capped | time (s) |\n";
  o += "|---|---|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& r : rows)
    o += fmt::format("| {} | {} | {} | {} | {} | {:+.2f}% | {:.2f}% | {} | {:.2f} |\n", r.policy, r.budget,
                     r.budget_tokens, r.planned, r.measured, 100 * r.plan_error, 100 * r.share_of_full, r.capped,
                     r.seconds);
  return o;
}

bool kv_memory_criterion(const std::vector<KVMemoryRow>& rows, std::string* verdict) {
  bool ok = true;
  std::string v;
  for (const auto& r : rows) {
    if (std::abs(r.plan_error) > 0.01) {
      ok = false;
      v += fmt::format("{}: measured {} is {:+.2f}% off the plan {}; ", r.policy, r.measured, 100 * r.plan_error, r.planned);
    }
    if (r.policy == "scalekv") {
      const bool fits = r.share_of_full <= 0.125;
      ok = ok && fits;
      v += fmt::format("scalekv at {} holds {:.2f}% of the full cache's measured peak ({} 12.5%); ", r.budget,
                       100 * r.share_of_full, fits ? "<=" : ">");
    }
  }
  v += ok ? "criterion met" : "criterion NOT met";
  if (verdict) *verdict = v;
  return ok;
}

int run_kv_memory_bench(const KVMemoryOptions& o, const std::string& command) {
  if (!o.out.empty()) check_output_file(o.out, "--out");  // before the work, not after it
  auto h = make_var_kv_bench_model(o.model);
  const auto rows = measure_kv_memory(h->model, split_list(o.policies), o.budget, o.kv, o.seed);
  std::string verdict;
  const bool ok = kv_memory_criterion(rows, &verdict);
  if (!h->model.output_rank) return ok || !o.check ? 0 : 1;
  const std::string md = kv_memory_markdown(rows, h->model.description, command) + "\n" + verdict + "\n";
  fmt::print("{}", md);
  if (!o.out.empty()) {
    write_file_atomic(o.out, md);
  }
  return ok || !o.check ? 0 : 1;
}

}  // namespace skv
