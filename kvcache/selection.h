// selection.h - the token-selection stage shared by the observation-window policies (ScaleKV, SnapKV,
// PyramidKV), as pure functions on host arrays so the official ScaleKV records can pin it down
// without a model: observation window positions, 1-D pooling, window masking, top-k with the
// lower-index tie rule, sort. The one choice to know: ties are broken as the CUDA top-k kernel of the
// official run does (equal scores: the lower cache index wins); max-pooling copies one value to up to
// five neighbours, so exact ties at the boundary are common and any other rule keeps other tokens.
#pragma once

#include <cstdint>
#include <vector>

namespace skv {

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
ObsWindow scalekv_reference_window(int64_t cur_len, int64_t key_len, int window);

// The generalised grid for any h x w map: gh = min(grid, h) rows and gw = min(grid, w) columns of
// cells, the centre of each (i * (h / gh) + (h / gh - 1) / 2, likewise for columns); gh * gw positions.
// Equal to the reference window for square maps with h >= grid.
ObsWindow grid_window(int h, int w, int64_t hist_len, int grid = 4);

// SnapKV's window: the last min(window, cur_len) tokens of the current map.
ObsWindow last_tokens_window(int64_t cur_len, int64_t hist_len, int window);

enum class PoolKind { Max, Avg };
// F.max_pool1d / F.avg_pool1d(kernel, stride 1, padding kernel / 2) along one row: max pooling pads
// with -inf, average pooling with zeros and divides by the kernel (count_include_pad).
void pool1d(const float* in, int64_t n, int kernel, PoolKind kind, float* out);

// Indices of the k largest values in descending order; equal values: the lower index first.
void topk_lower_index(const float* v, int64_t n, int64_t k, std::vector<int64_t>& out);

// What one (row, head) selection did, for tests and traces.
struct RowSelection {
  std::vector<float> pooled;   // pool1d(scores) before the window is masked
  std::vector<int64_t> topk;   // in top-k order
  std::vector<int64_t> kept;   // sort(topk + window), `capacity` entries (fewer if the row is shorter)
};

// The selection stage of update_kv for one (row, head): pool the scores (the caller has already set the
// window key columns to -inf where the scoring does so), set the window positions to -inf, take the
// top (capacity - |window|) with the lower-index tie rule (at most the number of non-window entries),
// add the window and sort ascending.
void select_row(const float* scores, int64_t n, const std::vector<int64_t>& window, int64_t capacity, PoolKind pool,
                int kernel, RowSelection& out);

}  // namespace skv
