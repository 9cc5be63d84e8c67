// kv_select_ref.h - the generic pieces of observation-window KV selection (ScaleKV, SnapKV, PyramidKV),
// on host tensors: the reference for the CUDA kernels of runtime/cuda/kv_select.h, which implement
// exactly these semantics (DESIGN.md "ScaleKV, precisely", point 4; README-infinity.md, "what ScaleKV
// actually does"). Plain loops, in the order the kernels accumulate, so tests can compare them.
//
// Vocabulary. A layer's keys at selection time are [store (hist_len tokens) | current scale (cur_len
// tokens)]; column c < hist_len is store slot c, column c >= hist_len is current token c - hist_len.
// The observation window is up to 16 current-scale queries (scalekv_window); their key columns
// hist_len + win[i] are the "window columns", always kept and never candidates.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/tensor.h"

namespace skv {

// The released observation window: 16 queries (a 4x4 grid). The one default every windowed policy,
// config, budget table and CLI option starts from.
constexpr int kScaleKVWindow = 16;

// Observation window of an h x w map, as the released ScaleKV code picks it: for a square map with
// h >= 4, the centres of a 4x4 grid, row/column c_i = i * (h/4) + (h/4 - 1)/2 (i = 0..3), position
// y * w + x, ascending; otherwise the last min(16, h*w) tokens. Returns query indices in [0, h*w).
std::vector<int32_t> scalekv_window(int64_t h, int64_t w);

enum class WindowScore {
  Raw,      // sum over window queries of scale * q.k; window columns = -inf (released ScaleKV code)
  Softmax,  // sum over window queries of softmax_c(scale * q.k) with window columns excluded (weight 0);
            // window columns = 0 (the paper's description; SnapKV-style)
};
enum class WindowPool {
  Max,  // F.max_pool1d(kernel, stride 1, padding kernel/2): implicit -inf padding
  Avg,  // F.avg_pool1d(kernel, stride 1, padding kernel/2, count_include_pad=True): zero padding, / kernel
};

// scores [R, H, hist_len + cur_len] (F32) for queries q [R, H, cur_len, D] (only rows win[] are read),
// keys hist_k [R, H, cap, D] (first hist_len) and cur_k [R, H, cur_len, D]. Raw: the sum runs over
// the window queries in order, each term scale * (sum over d in order of q[d] * k[d]).
void window_scores_ref(const Tensor& q, const std::vector<int32_t>& win, const Tensor& hist_k, int64_t hist_len,
                       const Tensor& cur_k, float scale, WindowScore mode, Tensor& scores);

// out[..., i] = pool over in[..., i - kernel/2 .. i + kernel/2] (clipped), last axis; kernel odd.
void pool1d_ref(const Tensor& in, int kernel, WindowPool mode, Tensor& out);

// kept [R, H, k + |win_cols|] (I32, ascending per (r, h)) = sort(top-k of pooled over the non-window
// columns  U  win_cols). Top-k: larger value first; among equal values the lower column index wins
// (torch.topk on CUDA; the golden's tie rule). win_cols ascending; k <= columns - |win_cols|.
void topk_keep_ref(const Tensor& pooled, const std::vector<int32_t>& win_cols, int64_t k, Tensor& kept);

}  // namespace skv
