// policy.h - the interface every KV-cache policy implements, and the factory of the baselines.
// After a layer's attention at scale k, the cache asks the policy how many tokens the layer keeps
// (budget) and, when that is fewer than it holds (its store plus scale k's tokens), which ones
// (select). Selection is per (row, head); the budget is per layer and scale and the same for all its
// heads, so every rank of a tensor-parallel group, owning a slice of the heads, keeps the same number
// of tokens per layer and the same cache layout. A policy that learns from the request (ScaleKV's
// online calibration) sums its statistics over the ranks with the Communicator it is given, so every
// rank reaches the same budgets.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "kvcache/schedule.h"
#include "runtime/backend.h"
#include "kvcache/selection.h"  // kScaleKVWindow

namespace skv {

class Communicator;

// Which queries a policy scores the cache with (it may ask for both).
struct QueryNeeds {
  bool raw = false;        // q part of mat_qkv(x): no bias, no norm, no RoPE (the released ScaleKV code)
  bool attention = false;  // the queries the attention used (biased, normalised, scaled, rotated)
};

// What a policy computed in one select() call, filled when CompressionInput::record is set, so a
// parity check (verify-golden) or a decorator can compare it with the official code's records.
// Everything is per (row, local head), row-major; a policy leaves empty what it does not compute.
struct CompressionRecord {
  int64_t total = 0;             // tokens scored: store + current scale
  std::vector<int32_t> window;   // [R*H*w] observation-window positions (cache indices)
  std::vector<float> scores;     // [R*H*total] scores before pooling (-inf at the window keys)
  std::vector<float> pooled;     // [R*H*total] pooled scores (before the window is masked for top-k)
  std::vector<int32_t> kept;     // [R*H*budget] what select() returned (downloaded)
};

struct CompressionInput {
  int layer = 0;
  int scale = 0;
  const Schedule* schedule = nullptr;
  Backend* backend = nullptr;
  const std::vector<KVSegment>* hist = nullptr;  // the layer's store: views into the pool, in token order
  int64_t hist_len = 0;
  const Tensor* cur_k = nullptr;  // this scale's keys/values [R, H, cur_len, hd] (the transient buffer)
  const Tensor* cur_v = nullptr;
  int64_t cur_len = 0;
  const Tensor* q_raw = nullptr;   // [R, H, cur_len, hd] when QueryNeeds::raw
  const Tensor* q_attn = nullptr;  // [R, H, cur_len, hd] when QueryNeeds::attention
  float attn_scale = 1.0f;  // what the model's attention multiplies q.k by
  int rows = 0, heads = 0, head_dim = 0;  // heads: this rank's
  int head_offset = 0;  // global index of this rank's first head (tensor parallel)
  int64_t total() const { return hist_len + cur_len; }
  // Keys of [store + current] as attention segments.
  std::vector<KVSegment> all_segments() const;
  CompressionRecord* record = nullptr;  // optional: filled by policies that support recording
};

class KVPolicy {
 public:
  virtual ~KVPolicy() = default;
  virtual std::string name() const = 0;
  // Tokens `layer` keeps after scale `scale`, when it holds `total` = store + current tokens.
  // A value >= total keeps everything.
  virtual int64_t budget(int layer, int scale, int64_t total) const = 0;
  // The budget the memory plan assumes before the request runs. Equal to budget() for every policy
  // whose budgets are fixed in advance; a policy that decides during the request (ScaleKV online)
  // plans with budgets whose peak bounds its run, and the cache keeps it inside that plan.
  virtual int64_t planned_budget(int layer, int scale, int64_t total) const { return budget(layer, scale, total); }
  // The first scale whose budgets may differ from planned_budget (decided during the request), or a number
  // past the last scale when the plan is exact. From that scale on the plan holds the request to the largest
  // store it plans for the whole request (kvcache/planner.h), not to the plan of each scale.
  virtual int first_unplanned_scale() const { return std::numeric_limits<int>::max(); }
  virtual QueryNeeds queries() const { return {}; }
  // Called for every layer after its attention, before budget/select (statistics, e.g. the ASI).
  virtual void observe(const CompressionInput& in) {}
  // The kept tokens: I32 [R, H, budget] on in.backend, ascending per (row, head), indices into
  // [0, total): index i < hist_len is store slot i, otherwise token i - hist_len of this scale.
  virtual Tensor select(const CompressionInput& in, int64_t budget) = 0;
  // Hooks around a request and a scale (online calibration needs them).
  virtual void begin_request() {}
  virtual void begin_scale(int scale) {}
  virtual void end_scale(int scale) {}
  // Tensor parallel: the group whose ranks must reach the same decisions (null: one rank).
  virtual void set_communicator(Communicator* comm) {}
};

// Keep everything (the official model's cache).
std::unique_ptr<KVPolicy> make_full_policy();

// The baselines. `budget` is B tokens per layer (the uniform budget); `window` the observation window.
// sliding-window: the B most recent tokens. streamingllm: `sinks` first tokens + the B - sinks most
// recent. snapkv: uniform B, the last `window` tokens of the current map observe, softmax scores
// averaged, average-pooled (kernel 5), top-k + window. pyramidkv: the same selection with a budget that
// falls linearly with depth from 2B - B/beta to B/beta (sum B * depth).
std::unique_ptr<KVPolicy> make_sliding_window_policy(int64_t budget);
std::unique_ptr<KVPolicy> make_streamingllm_policy(int64_t budget, int64_t sinks = 4);
std::unique_ptr<KVPolicy> make_snapkv_policy(int64_t budget, int depth, int window = kScaleKVWindow, int kernel = 5);
std::unique_ptr<KVPolicy> make_pyramidkv_policy(int64_t budget, int depth, int window = kScaleKVWindow, int kernel = 5,
                                                double beta = 20.0);
// PyramidKV's per-layer budgets (exposed for tests and the planner).
std::vector<int64_t> pyramid_budgets(int64_t budget, int depth, int window, double beta);

// Kept indices computed on the host ([R * H * n], row-major over (row, head)) as the I32 [R, H, n]
// tensor select() returns, on `be` (one upload on a device backend).
Tensor kept_on_backend(Backend& be, const std::vector<int32_t>& kept, int rows, int heads, int64_t n);
// The other way, for records and tests: select()'s tensor as a host vector (a download on a device).
std::vector<int32_t> kept_on_host(Backend& be, const Tensor& kept);

}  // namespace skv
