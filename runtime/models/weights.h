// weights.h - where model weights come from: a checkpoint file, or deterministic random values.
// Every weight is requested with the shape the config implies and checked against the file before
// use, so a checkpoint that does not fit its config fails with the file, the tensor and both
// shapes named - never with a wrong answer. The random source (benchmarks, tests, random
// checkpoints) hands out the same tensors the file would hold, generated from (seed, name), so every
// tensor-parallel rank sees identical full tensors and slices its own part.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "runtime/backend.h"
#include "runtime/safetensors.h"

namespace skv {

// What a weight is for. Matmul: a Linear layer's 2-D weight, kept in the backend's weight_dtype()
// (F32, F16 or BF16; see Backend::set_weight_dtype). Any: kept in F32 (embedding tables, positions,
// norms, biases, conv kernels), because more ops than linear() read those.
enum class WeightUse { Any, Matmul };

// Parameters a model places on one rank, by how they are held: Linear weights (WeightUse::Matmul, in
// the backend's weight dtype) and everything else (F32); each part either replicated on every
// tensor-parallel rank or sharded over them. The memory plan's weight bytes come from this, and each
// model family's count is tested against the bytes its constructor actually places.
struct ParamCount {
  int64_t matmul_replicated = 0, matmul_sharded = 0;  // Linear weights
  int64_t other_replicated = 0, other_sharded = 0;    // F32: biases, norms, embeddings, per-head scales
  int64_t replicated() const { return matmul_replicated + other_replicated; }
  int64_t sharded() const { return matmul_sharded + other_sharded; }
  // Bytes on one rank of a group of `tp` ranks, with Linear weights of `matmul_bytes` bytes each.
  int64_t rank_bytes(int tp, int64_t matmul_bytes) const;
  // Bytes of the sharded part in full (what a group of any size holds once between its ranks).
  int64_t sharded_bytes(int64_t matmul_bytes) const { return rank_bytes(1, matmul_bytes) - replicated_bytes(matmul_bytes); }
  int64_t replicated_bytes(int64_t matmul_bytes) const { return matmul_replicated * matmul_bytes + other_replicated * 4; }
};

class WeightLoader {
 public:
  WeightLoader(const SafeTensors& st, Backend& be, std::string why = "");
  WeightLoader(uint64_t seed, Backend& be);  // random weights

  Backend& backend() const { return be_; }
  bool is_random() const { return st_ == nullptr; }
  bool has(const std::string& name) const;
  const SafeTensors* file() const { return st_; }

  // The whole tensor, on the backend.
  Tensor get(const std::string& name, const Shape& shape, WeightUse use = WeightUse::Any) const;
  // Rows of the first axis (tensor-parallel column split of a Linear): several ranges concatenated.
  Tensor rows(const std::string& name, const Shape& full_shape, const std::vector<std::pair<int64_t, int64_t>>& ranges,
             WeightUse use = WeightUse::Any) const;
  // Columns [c0, c1) of a 2-D tensor (tensor-parallel row split of a Linear).
  Tensor cols(const std::string& name, const Shape& full_shape, int64_t c0, int64_t c1,
             WeightUse use = WeightUse::Any) const;
  // A host F32 copy for preprocessing (not placed on the backend, not counted as resident).
  Tensor host(const std::string& name, const Shape& shape) const;
  // Bytes of weights placed through this loader.
  int64_t bytes_loaded() const { return bytes_; }

  // When set (random mode), every full tensor generated is appended here once (to write a checkpoint).
  std::vector<std::pair<std::string, Tensor>>* record = nullptr;

 private:
  Tensor place(Tensor host, WeightUse use) const;
  Tensor finite(Tensor t, const std::string& name) const;  // throws on NaN/Inf, naming the file and tensor
  Tensor random_full(const std::string& name, const Shape& shape) const;
  const SafeTensors* st_ = nullptr;
  uint64_t seed_ = 0;
  Backend& be_;
  std::string why_;
  mutable int64_t bytes_ = 0;
};

}  // namespace skv
