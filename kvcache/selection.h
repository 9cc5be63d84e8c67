// selection.h - the one token-selection module of the observation-window policies (ScaleKV, SnapKV,
// PyramidKV): which queries observe (the windows), how the cache's keys are scored (the backend's
// window_scores), and which tokens each (row, head) keeps (pooling, window masking, top-k with the
// lower-index tie rule, sort). The selection stage has a host implementation here and a device one
// behind the backend (Backend::select_kept, runtime/cuda/kv_select.cu); select_kept() below checks the
// spec once for both and picks one, so a layer's scores never leave the device it runs on.
// The one choice to know: ties are broken as the CUDA top-k kernel of the official run does (equal
// scores: the lower cache index wins); max-pooling copies one value to up to five neighbours, so exact
// ties at the boundary are common and any other rule keeps other tokens.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "runtime/backend.h"

namespace skv {

struct CompressionInput;

// The released observation window: 16 queries (a 4x4 grid). The one default every windowed policy,
// config, budget table and CLI option starts from.
constexpr int kScaleKVWindow = 16;

// Observation window: the cache indices that are always kept (and whose key columns are masked), and
// the query (current-map) index each one observes with.
struct ObsWindow {
  std::vector<int64_t> cache_pos;  // ascending, in [0, key_len)
  std::vector<int64_t> query_idx;  // same length, in [0, cur_len)
};

// The released ScaleKV code (_select_window_indices + the clamp of update_kv): when the current map of
// cur_len tokens is a square s x s with s >= grid (grid = sqrt(window), an integer), the centres of a
// grid x grid partition (row i * (s / grid) + (s / grid - 1) / 2, same for columns) as y * s + x;
// otherwise (a map that is not square, or smaller than the grid, or a window that is not a square)
// the last min(window, key_len) cache entries, whose queries are clamped into the current map (history
// entries observe with query 0). The current map is the last cur_len of key_len cache entries.
ObsWindow scalekv_reference_window(int64_t cur_len, int64_t key_len, int window = kScaleKVWindow);

// The generalised grid for any h x w map: gh = min(grid, h) rows and gw = min(grid, w) columns of
// cells, the centre of each (i * (h / gh) + (h / gh - 1) / 2, likewise for columns); gh * gw positions.
// Equal to the reference window for square maps with h >= grid.
ObsWindow grid_window(int h, int w, int64_t hist_len, int grid = 4);

// SnapKV's window: the last min(window, cur_len) tokens of the current map.
ObsWindow last_tokens_window(int64_t cur_len, int64_t hist_len, int window);

// ---- the selection stage: host implementation --------------------------------------------------------
// Indices of the k largest values in descending order; equal values: the lower index first.
void topk_lower_index(const float* v, int64_t n, int64_t k, std::vector<int64_t>& out);

// What one (row, head) selection did, for tests and traces.
struct RowSelection {
  std::vector<float> pooled;   // the pooled scores (window keys masked first when the spec says so)
  std::vector<int64_t> topk;   // the chosen candidates, in top-k order
  std::vector<int64_t> kept;   // sort(topk + window): min(budget, n) entries
};

// The selection stage of one (row, head), exactly as KeepSpec (runtime/backend.h) states it: the
// window columns read as -inf when spec.mask_window_keys, pool, take the min(budget, n) - |window|
// best non-window columns (lower index first among equal values), add the window, sort ascending.
void select_row(const float* scores, int64_t n, const KeepSpec& spec, RowSelection& out);

// The selection stage of every (row, head) of scores F32 [R, H, n] on the backend that holds them:
// kept I32 [R, H, spec.budget] on the same backend. Checks the spec (window ascending, distinct, at most
// kMaxKeepWindow columns, in [0, n); budget in [|window|, n]; kernel odd) for every backend alike, then
// runs select_row per (row, head) on the CPU and Backend::select_kept elsewhere.
Tensor select_kept(Backend& be, const Tensor& scores, const KeepSpec& spec);

// ---- scoring + selection of one layer (what the policies call) -----------------------------------------
struct ScoringSpec {
  const Tensor* q = nullptr;   // [R, H, cur_len, hd]: the queries the window observes with
  ObsWindow window;
  float scale = 1.0f;          // multiplies q.k
  ScoreMode mode = ScoreMode::RawSum;
  bool mask_window_keys = false;  // -inf at the window key columns before pooling (the released ScaleKV code)
  PoolKind pool = PoolKind::Max;
  int kernel = 5;
};

// Optional trace of every (row, head) selection: row, local head, the scores after window masking and
// what was selected. Tracing downloads the layer's scores and kept indices (parity checks, tests).
using SelectionTrace = std::function<void(const CompressionInput& in, int row, int head, const std::vector<float>& scores,
                                          const RowSelection& sel)>;

// Scores [store + current] with the backend's window_scores and selects with select_kept(): kept I32
// [R, H, budget] on the input's backend, ascending per (row, head). Nothing crosses to the host unless
// a trace is given.
Tensor score_and_select(const CompressionInput& in, const ScoringSpec& spec, int64_t budget,
                        const SelectionTrace* trace = nullptr);

}  // namespace skv
