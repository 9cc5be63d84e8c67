// golden_scalekv.h - stage one of the ScaleKV reference check: the selection stage against the
// official records, without a model. For every compression a golden recorded (NAME.scalekv.expected.
// safetensors: kv.{si}.{l}.scores/window/window_q/pooled/topk/kept/kept_abs), our window positions,
// max-pooling, window masking, top-k (lower-index tie rule) and sort are run on the recorded raw scores
// and must reproduce the records exactly; the budget table and gate of NAME.scalekv.json must reproduce
// the recorded cache lengths before/after every update. Data-driven: the schedule comes from
// NAME.config.json, the depth, budgets and window from the records and NAME.scalekv.json.
#pragma once

#include <string>
#include <vector>

#include "launcher/golden.h"

namespace skv {

struct ScaleKVSelectionStats {
  int compressions = 0;  // (scale, layer) records checked
  int64_t rows = 0;      // (batch row, head) selections checked
  int64_t mismatches = 0;
};

// Names NAME for which dir/NAME.scalekv.json and dir/NAME.scalekv.expected.safetensors exist.
std::vector<std::string> scalekv_golden_names(const std::string& dir);

GoldenOutcome verify_scalekv_selection_golden(const std::string& dir, const std::string& name, const GoldenOptions& opt,
                                              ScaleKVSelectionStats* stats = nullptr);

}  // namespace skv
