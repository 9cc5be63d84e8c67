// multiscale_cache.h - the multi-scale KV cache of one rank.
// Per layer a preallocated store k, v [rows, heads, capacity, head_dim] (capacity from the plan, so
// the peak is known before the first scale), its length, and the absolute position of every kept
// token per (row, head). The current scale's K/V live in ONE transient buffer shared by all layers:
// attention reads [store + transient], then the layer either appends the transient tokens or the
// policy compacts [store + transient] into the store in place. The last scale's K/V are never
// stored. Peak KV bytes = sum of the stores + one scale's transient K/V.
#pragma once

#include <cstdint>
#include <vector>

#include "kvcache/policy.h"
#include "runtime/backend.h"

namespace skv {

class MultiScaleKVCache {
 public:
  struct Layer {
    Tensor k, v;               // [rows, heads, capacity, head_dim]
    int64_t len = 0;
    std::vector<int32_t> pos;  // [rows * heads * capacity] absolute token positions (host)
    int64_t capacity() const { return k.defined() ? k.dim(2) : 0; }
  };

  MultiScaleKVCache(Backend& backend, int rows, int heads, int head_dim, const std::vector<int64_t>& capacity,
                    DType dtype = DType::F32);

  int num_layers() const { return static_cast<int>(layers_.size()); }
  int rows() const { return rows_; }
  int heads() const { return heads_; }
  int head_dim() const { return head_dim_; }
  Layer& layer(int l) { return layers_[l]; }
  const Layer& layer(int l) const { return layers_[l]; }

  // Allocates the transient buffers for a scale of `tokens` tokens starting at absolute `offset`.
  void begin_scale(int64_t tokens, int64_t offset);
  void end_scale();  // frees the transient buffers
  Tensor& cur_k() { return cur_k_; }
  Tensor& cur_v() { return cur_v_; }
  int64_t cur_len() const { return cur_len_; }
  int64_t cur_offset() const { return cur_offset_; }

  // Store the transient tokens after the layer's current ones.
  void append_current(int l);
  // Keep `kept` ([rows*heads*n] ascending indices into [store + transient]) as the new store.
  void compact(int l, const std::vector<int32_t>& kept, int64_t n);
  // Runs the policy for layer l after its attention at `scale` (append or compact). q may be null when
  // the policy needs no queries. Returns the layer's new length.
  int64_t update(int l, int scale, KVPolicy& policy, const Schedule& schedule, const Tensor* q, float attn_scale,
                 int head_offset);

  int64_t store_bytes() const;  // bytes of all stores (allocated capacity)
  void reset();                 // all lengths to 0

 private:
  Backend& be_;
  int rows_, heads_, head_dim_;
  DType dtype_;
  std::vector<Layer> layers_;
  Tensor cur_k_, cur_v_;
  int64_t cur_len_ = 0, cur_offset_ = 0;
};

}  // namespace skv
