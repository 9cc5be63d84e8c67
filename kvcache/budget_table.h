// budget_table.h - ScaleKV budget tables: how many tokens each layer keeps after each compressed scale,
// and which layers are drafters there. Two formats are read:
//  * ours (written by `scalekv calibrate`): {"format": "scalekv-budget-table", "depth", "schedule",
//    "base_capacity", "window", "scales": [{"scale": si, "budgets": [per layer], "drafters": [...],
//    "asi": [...], "z": [...]}]};
//  * the published one (StargazerX0/ScaleKV budgets/*.json, also found under "budget_table" or
//    "scalekv.budget" of a golden's scalekv.json): {"Scale N": {"Block b": 0|1, "Max", "Min", "High",
//    "Limit"}}, where "Scale N" is scale index N - 2, drafters (Block b = 1) keep Max and refiners Min.
// Both are checked against the model: the depth, and the schedule (the compressed scales must be exactly
// those whose cumulative length exceeds the base capacity, up to the last stored scale).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvcache/schedule.h"
#include "kvcache/selection.h"  // kScaleKVWindow

namespace skv {

struct BudgetTable {
  std::string source;           // file (for errors)
  int depth = 0;
  int64_t base_capacity = 0;    // B: the uniform per-layer budget; compression starts once a scale's cumulative length exceeds it
  int window = kScaleKVWindow;
  std::vector<int> scales;      // compressed scale indices, ascending, consecutive
  std::vector<std::vector<int64_t>> budgets;  // [scale][layer]
  std::vector<std::vector<uint8_t>> drafter;  // [scale][layer]
  std::vector<std::vector<double>> asi, z;    // [scale][layer] when calibrated (else empty)
  std::vector<ScaleShape> schedule;           // ours: the schedule it was made for (else empty)

  // Capacity of `layer` at scale `si` as update_kv resolves it: the entry of si, or of the last scale in
  // the table for later scales (the released code maps scale index 12 to the entry of 11); -1 before it.
  int64_t capacity(int layer, int si) const;
  int64_t drafter_count(int scale_pos) const;
};

// The first scale whose cumulative length exceeds `base` (schedule.num_scales() when none does).
int first_compressed_scale(const Schedule& schedule, int64_t base);

// Reads either format; `base_capacity` overrides the table's (0: the table's own, or for the published
// format the uniform budget implied by its first scale, sum of the budgets / depth). Checks the table
// against `depth` and `schedule` and names the file, the entry and what would fit in every error.
BudgetTable read_budget_table(const std::string& path, int depth, const Schedule& schedule, int64_t base_capacity = 0);
// Parses a JSON text (the reader's core; `where` names the source).
BudgetTable parse_budget_table(const std::string& json_text, const std::string& where, int depth,
                               const Schedule& schedule, int64_t base_capacity = 0);
void write_budget_table(const std::string& path, const BudgetTable& t, const std::string& model_name);

}  // namespace skv
