// request_kv.h - the KV side of one generation request, the same for every model family: the policy
// (the full cache when the caller gives none) joined to the model's communicator and started for the
// request, the memory plan, the cache held to that plan, and what GenerateResult reports about
// them (the largest store capacity, the planned and the measured KV peak, compressions cut to the plan).
#pragma once

#include <chrono>
#include <memory>

#include "kvcache/multiscale_cache.h"
#include "kvcache/policy.h"
#include "runtime/models/generation.h"

namespace skv {

class Communicator;

inline double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

class RequestKV {
 public:
  // rows = batch rows (x2 with CFG), F32 K and V of `local_heads` heads per layer. Fills
  // res.kv_store_bytes and res.kv_planned_peak_bytes. Alone (`pages` null: the cache has pages of its own)
  // it resets the allocator's peaks and measures its KV peak there; beside other requests (the engine, whose
  // page pool `pages` is) the allocator's peak is the engine's, and the request's own peak is what its cache
  // held at once: its pages plus transient K/V.
  RequestKV(Backend& be, Communicator& comm, KVPolicy* policy, const Schedule& schedule, int depth, int rows,
            int local_heads, int head_dim, GenerateResult& res, KVPagePool* pages = nullptr);
  // Bytes of one cached token in one layer: F32 K and V of `local_heads` heads for every row (what the
  // plan counts and the cache allocates).
  static int64_t token_bytes(int64_t rows, int64_t local_heads, int64_t head_dim) {
    return rows * local_heads * head_dim * 2 * static_cast<int64_t>(dtype_size(DType::F32));
  }
  KVPolicy& policy() { return *policy_; }
  MultiScaleKVCache& cache() { return *cache_; }
  // cache().begin_scale, noting the transient K/V it allocates.
  void begin_scale(int64_t tokens, int64_t offset);
  // Tokens stored over all layers now (ScaleTiming::kv_store_tokens).
  int64_t store_tokens() const;
  // After the last scale: res.kv_peak_bytes (above what the allocator held before) and res.kv_capped.
  void finish(GenerateResult& res) const;

 private:
  std::unique_ptr<KVPolicy> full_;
  KVPolicy* policy_;
  Allocator& alloc_;
  int64_t kv_before_;
  int depth_;
  bool shared_;  // the engine's page pool
  std::unique_ptr<MultiScaleKVCache> cache_;
};

}  // namespace skv
