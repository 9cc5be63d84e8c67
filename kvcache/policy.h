// policy.h - the interface every KV-cache policy implements.
// After a layer's attention at scale k, the model asks the policy how many tokens the layer keeps
// (budget) and, when that is fewer than it holds (its store plus scale k's tokens), which ones
// (select). Selection is per (row, head); the budget is per layer and scale and the same for all its
// heads, so every rank of a tensor-parallel group, owning a slice of the heads, keeps the same
// number of tokens per layer.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kvcache/schedule.h"
#include "runtime/backend.h"

namespace skv {

// Which queries a policy scores the cache with.
enum class ObsQuery {
  None,       // the policy does not look at queries (full, sliding-window, streamingllm)
  Raw,        // the q part of mat_qkv(x) without bias, norm or RoPE (the released ScaleKV code)
  Attention,  // the queries the attention used (biased, normalised, scaled, rotated)
};

// What a policy computed in one select() call, filled when CompressionInput::record is set, so a
// parity check (verify-golden) or a decorator can compare it with the official code's records.
// Everything is per (row, local head), row-major; a policy leaves empty what it does not compute.
struct CompressionRecord {
  int64_t total = 0;             // tokens scored: store + current scale
  std::vector<int32_t> window;   // [R*H*w] observation-window positions (cache indices)
  std::vector<float> scores;     // [R*H*total] scores before pooling (-inf at the window keys)
  std::vector<float> pooled;     // [R*H*total] pooled scores (before the window is masked for top-k)
  std::vector<int32_t> kept;     // [R*H*budget] what select() returned
};

struct CompressionInput {
  int layer = 0;
  int scale = 0;
  const Schedule* schedule = nullptr;
  Backend* backend = nullptr;
  const Tensor* hist_k = nullptr;  // the layer's store [R, H, cap, hd]; first hist_len tokens valid
  const Tensor* hist_v = nullptr;
  int64_t hist_len = 0;
  const Tensor* cur_k = nullptr;   // this scale's keys/values [R, H, cur_len, hd]
  const Tensor* cur_v = nullptr;
  int64_t cur_len = 0;
  const Tensor* q = nullptr;       // [R, H, cur_len, hd], as obs_query() asks (null for None)
  const std::vector<int32_t>* hist_pos = nullptr;  // absolute token position per store slot [R*H*cap]
  int64_t hist_cap = 0;
  float attn_scale = 1.0f;         // the scale the model's attention multiplies q.k by
  int head_offset = 0;             // global index of this rank's first head (tensor parallel)
  CompressionRecord* record = nullptr;  // optional: filled by policies that support recording
};

class KVPolicy {
 public:
  virtual ~KVPolicy() = default;
  virtual std::string name() const = 0;
  // Tokens `layer` keeps after scale `scale`, when it holds `total` = store + current tokens.
  // A value >= total keeps everything.
  virtual int64_t budget(int layer, int scale, int64_t total) const = 0;
  virtual ObsQuery obs_query() const { return ObsQuery::None; }
  // Fill `kept` ([R * H * budget], row-major over (row, head)) with ascending indices into
  // [0, total): index i < hist_len is store slot i, otherwise token i - hist_len of this scale.
  virtual void select(const CompressionInput& in, int64_t budget, std::vector<int32_t>& kept) = 0;
  // Hooks around a scale (online calibration needs them).
  virtual void begin_scale(int scale) {}
  virtual void end_scale(int scale) {}
};

// Keep everything (the official model's cache).
std::unique_ptr<KVPolicy> make_full_policy();

// Largest store length each layer reaches under `policy` (the last scale is never stored).
std::vector<int64_t> plan_store_capacity(const KVPolicy& policy, const Schedule& schedule, int depth);

}  // namespace skv
