// The selection stage: window grids (square, non-square, smaller than the grid), pooling, the
// lower-index tie rule and select_row's bookkeeping.
#include <gtest/gtest.h>

#include <limits>

#include "kvcache/selection.h"
#include "runtime/check.h"

namespace skv {

namespace {
const float kInf = std::numeric_limits<float>::infinity();
}

TEST(ScaleKVWindow, SquareMapsUseTheGridCentresOfTheReleasedCode) {
  // 20x20: centres 2, 7, 12, 17 (README-infinity: 20: 2,7,12,17; 64: 7,23,39,55)
  ObsWindow w = scalekv_reference_window(400, 921, 16);
  ASSERT_EQ(w.cache_pos.size(), 16u);
  EXPECT_EQ(w.query_idx[0], 2 * 20 + 2);
  EXPECT_EQ(w.query_idx[1], 2 * 20 + 7);
  EXPECT_EQ(w.query_idx[15], 17 * 20 + 17);
  EXPECT_EQ(w.cache_pos[0], 521 + 42);
  w = scalekv_reference_window(4096, 10481, 16);
  EXPECT_EQ(w.query_idx[5], 23 * 64 + 23);
  EXPECT_EQ(w.query_idx[15], 55 * 64 + 55);
  // 6x6: patch 1, centres 0, 1, 2, 3 (the grid sits in the top-left corner, as released)
  w = scalekv_reference_window(36, 57, 16);
  EXPECT_EQ(w.query_idx[15], 3 * 6 + 3);
  // 4x4: every token of the map
  w = scalekv_reference_window(16, 21, 16);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(w.query_idx[i], i);
}

TEST(ScaleKVWindow, NonSquareMapsFallBackToTheLastTokens) {
  // a 3x4 map (12 tokens, not a square) in 30 keys: the last 16 cache entries; the 4 history ones observe with query 0
  ObsWindow w = scalekv_reference_window(12, 30, 16);
  ASSERT_EQ(w.cache_pos.size(), 16u);
  EXPECT_EQ(w.cache_pos.front(), 14);
  EXPECT_EQ(w.cache_pos.back(), 29);
  EXPECT_EQ(w.query_idx[0], 0);
  EXPECT_EQ(w.query_idx[3], 0);
  EXPECT_EQ(w.query_idx[4], 0);  // cache 18 = first token of the map
  EXPECT_EQ(w.query_idx[15], 11);
  // 90x45 (Infinity h/w = 2): 4050 tokens, not a square -> last 16 tokens of the map
  w = scalekv_reference_window(4050, 9000, 16);
  EXPECT_EQ(w.query_idx.front(), 4034);
  EXPECT_EQ(w.query_idx.back(), 4049);
}

TEST(ScaleKVWindow, MapsSmallerThanTheGridFallBackToo) {
  // 2x2 in 5 keys: min(16, 5) = 5 entries, all keys
  ObsWindow w = scalekv_reference_window(4, 5, 16);
  EXPECT_EQ(w.cache_pos, (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(w.query_idx, (std::vector<int64_t>{0, 0, 1, 2, 3}));
  // 3x3 square but smaller than 4x4
  w = scalekv_reference_window(9, 40, 16);
  EXPECT_EQ(w.cache_pos.front(), 24);
  EXPECT_EQ(w.query_idx.back(), 8);
  // a window that is not a square (e.g. 12) falls back as well
  w = scalekv_reference_window(64, 100, 12);
  EXPECT_EQ(w.cache_pos.size(), 12u);
  EXPECT_EQ(w.cache_pos.front(), 88);
}

TEST(ScaleKVWindow, GeneralisedGridCoversNonSquareAndSmallMaps) {
  ObsWindow w = grid_window(20, 20, 100, 4);  // equals the reference on squares
  ObsWindow r = scalekv_reference_window(400, 500, 16);
  EXPECT_EQ(w.cache_pos, r.cache_pos);
  EXPECT_EQ(w.query_idx, r.query_idx);
  w = grid_window(8, 12, 0, 4);  // rows 0 2 4 6 centres (patch 2 -> 0), columns patch 3 -> centre 1
  ASSERT_EQ(w.query_idx.size(), 16u);
  EXPECT_EQ(w.query_idx[0], 0 * 12 + 1);
  EXPECT_EQ(w.query_idx[1], 0 * 12 + 4);
  EXPECT_EQ(w.query_idx[4], 2 * 12 + 1);
  EXPECT_EQ(w.query_idx[15], 6 * 12 + 10);
  w = grid_window(2, 3, 7, 4);  // smaller than the grid: 2 x 3 cells, every token
  EXPECT_EQ(w.query_idx, (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(w.cache_pos.front(), 7);
  w = last_tokens_window(10, 3, 4);
  EXPECT_EQ(w.query_idx, (std::vector<int64_t>{6, 7, 8, 9}));
  EXPECT_EQ(w.cache_pos, (std::vector<int64_t>{9, 10, 11, 12}));
}

// The pooling of the selection stage (kmath::pool_at, shared with the CUDA kernel), as select_row records it.
TEST(Selection, PoolingMatchesTorch) {
  const float in[6] = {1, -kInf, 3, 0, -kInf, 2};
  RowSelection sel;
  select_row(in, 6, KeepSpec{.pool = PoolKind::Max, .kernel = 5, .budget = 0}, sel);
  EXPECT_EQ(sel.pooled, (std::vector<float>{3, 3, 3, 3, 3, 2}));
  const float a[4] = {5, 0, 0, 10};
  select_row(a, 4, KeepSpec{.pool = PoolKind::Avg, .kernel = 3, .budget = 0}, sel);  // zero padding, / kernel
  EXPECT_FLOAT_EQ(sel.pooled[0], 5.0f / 3);
  EXPECT_FLOAT_EQ(sel.pooled[3], 10.0f / 3);
  EXPECT_THROW(select_row(a, 4, KeepSpec{.pool = PoolKind::Max, .kernel = 4, .budget = 0}, sel), Error);
}

TEST(Selection, TopKBreaksTiesByTheLowerIndex) {
  const float v[7] = {1, 3, 3, 2, 3, 1, 0};
  std::vector<int64_t> k;
  topk_lower_index(v, 7, 4, k);
  EXPECT_EQ(k, (std::vector<int64_t>{1, 2, 4, 3}));
  topk_lower_index(v, 7, 2, k);
  EXPECT_EQ(k, (std::vector<int64_t>{1, 2}));
  topk_lower_index(v, 7, 9, k);
  EXPECT_EQ(k.size(), 7u);
}

KeepSpec keep_spec(std::vector<int64_t> window, int64_t budget, PoolKind pool = PoolKind::Max, int kernel = 3,
                   bool mask = false) {
  KeepSpec k;
  k.window = std::move(window);
  k.budget = budget;
  k.pool = pool;
  k.kernel = kernel;
  k.mask_window_keys = mask;
  return k;
}

TEST(Selection, SelectRowKeepsTheWindowAndSorts) {
  // scores with the window (positions 1 and 6) already at -inf, as the reference scoring does
  std::vector<float> s = {0, -kInf, 5, 1, 1, 0, -kInf, 4, 0, 0};
  RowSelection sel;
  select_row(s.data(), 10, keep_spec({1, 6}, 5), sel);
  // pooled (k=3): 0 5 5 5 1 1 4 4 4 0 ; window never a candidate -> top-3 of the rest: 2 (5), 3 (5), 7 (4)
  EXPECT_EQ(sel.topk, (std::vector<int64_t>{2, 3, 7}));
  EXPECT_EQ(sel.kept, (std::vector<int64_t>{1, 2, 3, 6, 7}));
  EXPECT_EQ(sel.pooled[1], 5.0f);  // pooled is recorded before the window is masked
  // a budget larger than the row keeps every token once
  select_row(s.data(), 10, keep_spec({1, 6}, 40), sel);
  EXPECT_EQ(sel.kept, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
}

TEST(Selection, MaskingTheWindowKeysBeforePoolingEqualsScoresThatAlreadyHaveIt) {
  const std::vector<float> raw = {0, 9, 5, 1, 1, 0, 8, 4, 0, 0};
  std::vector<float> masked = raw;
  masked[1] = masked[6] = -kInf;
  RowSelection a, b;
  select_row(raw.data(), 10, keep_spec({1, 6}, 5, PoolKind::Max, 3, true), a);
  select_row(masked.data(), 10, keep_spec({1, 6}, 5), b);
  EXPECT_EQ(a.pooled, b.pooled);
  EXPECT_EQ(a.kept, b.kept);
  // unmasked, the window's own high scores spread to their neighbours
  select_row(raw.data(), 10, keep_spec({1, 6}, 5), b);
  EXPECT_EQ(b.kept, (std::vector<int64_t>{0, 1, 2, 5, 6}));
}

TEST(Selection, AWindowColumnIsNeverACandidateEvenWhenEveryScoreIsMinusInfinity) {
  // All -inf: the lower-index rule picks the first non-window columns; no column is kept twice.
  const std::vector<float> s(8, -kInf);
  RowSelection sel;
  select_row(s.data(), 8, keep_spec({0, 1}, 4), sel);
  EXPECT_EQ(sel.kept, (std::vector<int64_t>{0, 1, 2, 3}));
}

// select_kept: the per-(row, head) stage over a tensor on the CPU, and the spec checks every backend shares.
TEST(Selection, SelectKeptRunsEveryRowAndChecksTheSpec) {
  Backend& be = cpu_backend();
  const int R = 2, H = 3, n = 12;
  Tensor scores = be.empty({R, H, n});
  for (int64_t i = 0; i < scores.numel(); ++i) scores.f32()[i] = static_cast<float>((i * 7919) % 13) - 6.0f;
  const KeepSpec spec = keep_spec({4, 9}, 6, PoolKind::Avg, 5);
  const Tensor kept = select_kept(be, scores, spec);
  ASSERT_EQ(kept.shape(), (Shape{R, H, 6}));
  RowSelection sel;
  for (int rh = 0; rh < R * H; ++rh) {
    select_row(scores.f32() + rh * n, n, spec, sel);
    for (int j = 0; j < 6; ++j) EXPECT_EQ(kept.data<int32_t>()[rh * 6 + j], sel.kept[j]) << rh << " " << j;
  }
  EXPECT_THROW(select_kept(be, scores, keep_spec({9, 4}, 6)), Error);     // not ascending
  EXPECT_THROW(select_kept(be, scores, keep_spec({4, 12}, 6)), Error);    // outside the row
  EXPECT_THROW(select_kept(be, scores, keep_spec({4, 9}, 1)), Error);     // budget below the window
  EXPECT_THROW(select_kept(be, scores, keep_spec({4, 9}, 13)), Error);    // budget above the row
  EXPECT_THROW(select_kept(be, scores, keep_spec({4, 9}, 6, PoolKind::Max, 4)), Error);  // even kernel
  std::vector<int64_t> wide(kMaxKeepWindow + 1);
  for (size_t i = 0; i < wide.size(); ++i) wide[i] = static_cast<int64_t>(i);
  Tensor big = be.zeros({1, 1, 400});
  EXPECT_THROW(select_kept(be, big, keep_spec(wide, 300)), Error);        // more than one launch holds
}

}  // namespace skv
