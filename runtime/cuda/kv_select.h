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
#include <vector>

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

}  // namespace skv::cuda
