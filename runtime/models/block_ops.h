// block_ops.h - pieces of the AdaLN transformer block that VAR and Infinity share word for word: a
// slot of the AdaLN modulation, the tensor-parallel all-reduce of a row-parallel output, and the FFN
// sub-block (LayerNorm without affine, modulate with scale 3 / shift 5, column-parallel fc1 + GELU-tanh,
// row-parallel fc2 + all-reduce + bias, residual gated by slot 1), and the packing of several requests'
// tokens into one activation that a scale step of the engine runs them as.
#pragma once

#include <cstdint>
#include <vector>

#include "kvcache/multiscale_cache.h"
#include "runtime/backend.h"

namespace skv {

class Communicator;

// ada [R, k, C] -> a contiguous [R, C] copy of slot `part`.
Tensor ada_slot(Backend& be, const Tensor& ada, int part);
// Sums t over the tensor-parallel ranks (nothing on one rank).
void tp_all_reduce(Communicator& comm, Tensor& t);
// One request's rows inside a packed activation [T, N] of several requests (the engine's scale step):
// tokens [begin, begin + rows * len) are its [rows, len, N] block, `ada` its AdaLN table [rows, k, C].
struct PackedPart {
  int64_t begin = 0, rows = 0, len = 0;
  const Tensor* ada = nullptr;
};
// The part's [rows, len, N] view of a packed [T, N] tensor.
Tensor packed_view(const Tensor& packed, const PackedPart& p);
// Packs the requests' activations xs[i] [rows, len, N] into one [T, N] and sets `parts` to their places
// (ada left null). One request's own buffer is the packed tensor (no copy: updates in place reach it).
Tensor pack_parts(Backend& be, const std::vector<Tensor>& xs, std::vector<PackedPart>& parts);

// LN(x) (no affine) of a packed x [T, C], modulated per part by its AdaLN slots `scale_slot` / `shift_slot`.
Tensor adaln_norm(Backend& be, const Tensor& x, const std::vector<PackedPart>& parts, int scale_slot, int shift_slot,
                  float eps);
// One request's rows of a packed mat_qkv output ([R, l, 3 * Hl * hd] view) split into q [R, Hl, l, hd]
// (with the query bias; q_head_scale: l2-normalised heads times these scales, null: no norm), and K, V
// into the cache's transient buffers (value bias; K l2-normalised when q is); with `raw`, also the
// queries of mat_qkv(x) without bias or norm (what the released ScaleKV code scores with) in q_raw.
void split_request_qkv(Backend& be, const Tensor& qkv, const Tensor& q_bias, const Tensor& v_bias,
                       const Tensor* q_head_scale, bool raw, MultiScaleKVCache& cache, Tensor& q, Tensor& q_raw);

// x += gamma2 * fc2(gelu(fc1(modulate(LN(x), ada 3, ada 5)))); fc1 holds this rank's `local_ffn` units.
// On a packed x [T, C]: the token-wise layers run once over every part, modulation and the gate per part.
void adaln_ffn_packed(Backend& be, Communicator& comm, Tensor& x, const std::vector<PackedPart>& parts,
                      const Tensor& fc1_w, const Tensor& fc1_b, const Tensor& fc2_w, const Tensor& fc2_b,
                      int64_t local_ffn, float eps);

}  // namespace skv
