// kv_select.h - device kernels for observation-window KV selection (ScaleKV; SnapKV / PyramidKV use
// the same pieces), so compression never downloads a layer's keys. Host-callable, plain C++ (no CUDA
// headers): kvcache/ policies may call them when the backend is CUDA. Every tensor argument lives on
// the CUDA backend; the semantics are exactly those of the host reference in runtime/kv_select_ref.h
// (tested against the official ScaleKV records in ../shared/golden), restated here:
//
//   keys at selection time = [store: hist_len of hist_k [R, H, cap, D] | current: cur_k [R, H, Lc, D]];
//   column c < hist_len is store slot c, column hist_len + t is current token t.
//   win: query indices (< Lc) of the observation window, ascending, at most 16 (scalekv_window()).
//
// 1. window_scores: scores [R, H, hist_len + Lc] (F32).
//      Raw:     scores[c] = sum_i scale * (q[win[i]] . k_c); window columns hist_len + win[i] = -inf.
//               (released ScaleKV: q = mat_qkv(x) without bias/norm/RoPE, scale = 1/sqrt(head_dim))
//      Softmax: scores[c] = sum_i softmax over non-window columns of scale * (q[win[i]] . k_c);
//               window columns = 0.
// 2. pool1d: kernel k (odd), stride 1, padding k/2, along the last axis.
//      Max: implicit -inf padding (F.max_pool1d). Avg: zero padding, divided by k (F.avg_pool1d,
//      count_include_pad=True).
// 3. topk_keep: kept [R, H, k + |win_cols|] (I32) = ascending sort of (the k largest pooled values over
//      the non-window columns, equal values: lower column first  U  win_cols). win_cols ascending,
//      k <= columns - |win_cols|. The result feeds Backend::gather_tokens directly.
// select(): 1 + 2 + 3 with win_cols = hist_len + win, k = budget - |win| (ScaleKV's update_kv).
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "runtime/backend.h"
#include "runtime/kv_select_ref.h"
#include "runtime/tensor.h"

namespace skv::cuda {

void window_scores(const Tensor& q, const std::vector<int32_t>& win, const Tensor& hist_k, int64_t hist_len,
                   const Tensor& cur_k, float scale, WindowScore mode, Tensor& scores);
void pool1d(const Tensor& in, int kernel, WindowPool mode, Tensor& out);
void topk_keep(const Tensor& pooled, const std::vector<int32_t>& win_cols, int64_t k, Tensor& kept);

// The whole ScaleKV token selection of one layer; returns kept [R, H, budget] (I32, on the device).
Tensor select(const Tensor& q, const std::vector<int32_t>& win, const Tensor& hist_k, int64_t hist_len,
              const Tensor& cur_k, float scale, WindowScore score, WindowPool pool, int kernel, int64_t budget);

// ---- the scalekv branch's Backend ops, on the device -----------------------------------------------------
// That branch adds Backend::gather_slots, ::window_scores and ::attention_mass (and KVSegment::start).
// CudaBackend implements gather_slots and attention_mass with these (they become overrides when that
// interface is merged); window_scores needs its ScoreMode enum, so the merge adds one line:
//   void window_scores(const Tensor& q, const std::vector<int64_t>& q_idx, const std::vector<KVSegment>& segs,
//                      float scale, ScoreMode mode, Tensor& out) override {
//     cuda::query_scores(q, q_idx, segs, scale, mode == ScoreMode::SoftmaxMean, out);
//   }
// Segments: k [R, H, cap, D], tokens [start, start + len) (start = 0 before the merge), no row_len.

// First token of a KV segment. The scalekv branch adds KVSegment::start (segments as extents of the
// cache's slot pool); until that lands here the member does not exist and every segment starts at 0.
// Written so this file compiles, and is right, on both sides of that merge.
template <class S, class = void>
struct has_segment_start : std::false_type {};
template <class S>
struct has_segment_start<S, std::void_t<decltype(std::declval<const S&>().start)>> : std::true_type {};
template <class S>
int64_t segment_start(const S& s) {
  if constexpr (has_segment_start<S>::value)
    return s.start;
  else
    return 0;
}

// pool [R, H, S, D]; slot I32 [>= max(n, hist_len)] maps logical token -> pool row (distinct slots);
// kept I32 [R, H, n] or [n] (shared), ascending. For each (r, h), j < n, i = kept[j]:
// pool[r, h, slot[j]] = i < hist_len ? pool[r, h, slot[i]] : cur[r, h, i - hist_len]  (in place).
void gather_slots(Tensor& pool, const Tensor& slot, int64_t hist_len, const Tensor& cur, const Tensor& kept, int64_t n);

// out [R, H, L] (L = sum of segment lengths), for the listed queries q_idx (repeats allowed) of
// q [R, H, Lq, D]: sum over them of scale * q.k_j (softmax_mean = false), or the mean over them of
// softmax_j(scale * q.k_j) over all L keys (softmax_mean = true). No window masking.
void query_scores(const Tensor& q, const std::vector<int64_t>& q_idx, const std::vector<KVSegment>& segs, float scale,
                  bool softmax_mean, Tensor& out);

// Attention Selectivity Index statistics: with a_ij = softmax_j(scale * q_i.k_j) over all keys, the first
// n_hist of them history: out [R, H, 2] = (mean_i sum_{j >= n_hist} a_ij, mean_i sum of the topk largest
// a_ij with j < n_hist). Sums in double, as the CPU reference.
void attention_mass(const Tensor& q, const std::vector<int64_t>& q_idx, const std::vector<KVSegment>& segs,
                    int64_t n_hist, float scale, int64_t topk, Tensor& out);

}  // namespace skv::cuda
