// scoring.h - observation-window scoring of [store + current] keys and per-(row, head) selection, the
// part SnapKV, PyramidKV and ScaleKV share. Scores come from the backend (window_scores), selection is
// the pure stage of kvcache/selection.h on the host copy of the scores.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "kvcache/policy.h"
#include "kvcache/selection.h"

namespace skv {

struct ScoringSpec {
  const Tensor* q = nullptr;   // [R, H, cur_len, hd]: the queries the window observes with
  ObsWindow window;
  float scale = 1.0f;          // multiplies q.k
  ScoreMode mode = ScoreMode::RawSum;
  bool mask_window_keys = false;  // -inf at the window key columns before pooling (the released ScaleKV code)
  PoolKind pool = PoolKind::Max;
  int kernel = 5;
};

// Optional trace of every (row, head) selection: global head index, raw scores and what was selected.
using SelectionTrace = std::function<void(const CompressionInput& in, int row, int head, const std::vector<float>& scores,
                                          const RowSelection& sel)>;

// Fills kept ([R * H * budget], ascending per (row, head)).
void score_and_select(const CompressionInput& in, const ScoringSpec& spec, int64_t budget, std::vector<int32_t>& kept,
                      const SelectionTrace* trace = nullptr);

}  // namespace skv
