// block_ops.h - pieces of the AdaLN transformer block that VAR and Infinity share word for word: a
// slot of the AdaLN modulation, the tensor-parallel all-reduce of a row-parallel output, and the FFN
// sub-block (LayerNorm without affine, modulate with scale 3 / shift 5, column-parallel fc1 + GELU-tanh,
// row-parallel fc2 + all-reduce + bias, residual gated by slot 1), and the packing of several requests'
// tokens into one activation that a scale step of the engine runs them as.
#pragma once

#include <cstdint>
#include <vector>

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

// x += gamma2 * fc2(gelu(fc1(modulate(LN(x), ada 3, ada 5)))); fc1 holds this rank's `local_ffn` units.
// On a packed x [T, C]: the token-wise layers run once over every part, modulation and the gate per part.
void adaln_ffn_packed(Backend& be, Communicator& comm, Tensor& x, const std::vector<PackedPart>& parts,
                      const Tensor& fc1_w, const Tensor& fc1_b, const Tensor& fc2_w, const Tensor& fc2_b,
                      int64_t local_ffn, float eps);

}  // namespace skv
