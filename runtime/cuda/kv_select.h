// kv_select.h - the KV policies' device ops, behind the CUDA backend's overrides of Backend::
// window_scores, attention_mass, select_kept and gather_extents (runtime/backend.h states each; the
// selection stage is kvcache/selection.h's, whose host implementation the tests compare these with).
// Host-callable, plain C++ (no CUDA headers); every tensor argument lives on the CUDA backend.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/backend.h"
#include "runtime/tensor.h"

namespace skv::cuda {

// Backend::select_kept: pool the scores (window columns -inf first when spec.mask_window_keys), then
// top-(budget - |window|) of the non-window columns by an MSB-first radix select (equal values: the lower
// column) and one ordered compaction that writes kept ascending with the window. No host round trip.
void select_kept(const Tensor& scores, const KeepSpec& spec, Tensor& kept);

// Backend::gather_extents (runtime/backend.h states it; check_gather_extents() checks the arguments): one block
// per (row, head), tiles of kGatherTile tokens, each token's address looked up once in the extent table.
void gather_extents(const std::vector<KVExtent>& store, int64_t hist_len, const Tensor& cur, const Tensor& kept,
                    int64_t first, int64_t n);

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
