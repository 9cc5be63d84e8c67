// policy.cpp - the full cache and the baseline policies: sliding window, StreamingLLM, SnapKV,
// PyramidKV. The baselines' budgets are fixed per layer before the request (so their memory plan is
// exact); SnapKV and PyramidKV observe with the last tokens of the current map, as SnapKV observes
// with the last tokens of a prompt.
#include "kvcache/policy.h"

#include <algorithm>
#include <cmath>

#include "runtime/check.h"

namespace skv {

namespace {

class FullPolicy final : public KVPolicy {
 public:
  std::string name() const override { return "full"; }
  int64_t budget(int, int, int64_t total) const override { return total; }
  Tensor select(const CompressionInput&, int64_t) override { SKV_FAIL("internal: the full policy never selects"); }
};

// Keeps the `sinks` oldest and the budget - sinks newest tokens of every (row, head). A store is in
// token order, so these are index ranges, the same for every (row, head).
class RecentPolicy final : public KVPolicy {
 public:
  RecentPolicy(std::string name, int64_t budget, int64_t sinks) : name_(std::move(name)), budget_(budget), sinks_(sinks) {
    SKV_CHECK(budget > sinks, "--kv-budget {} tokens is too small for {}: it needs more than its {} sink tokens", budget,
              name_, sinks);
  }
  std::string name() const override { return name_; }
  int64_t budget(int, int, int64_t total) const override { return std::min(total, budget_); }
  Tensor select(const CompressionInput& in, int64_t budget) override {
    const int64_t RH = static_cast<int64_t>(in.rows) * in.heads, total = in.total();
    const int64_t s = std::min(sinks_, budget);
    std::vector<int32_t> kept;
    kept.reserve(static_cast<size_t>(RH * budget));
    for (int64_t rh = 0; rh < RH; ++rh) {
      for (int64_t j = 0; j < s; ++j) kept.push_back(static_cast<int32_t>(j));
      for (int64_t j = total - (budget - s); j < total; ++j) kept.push_back(static_cast<int32_t>(j));
    }
    return kept_on_backend(*in.backend, kept, in.rows, in.heads, budget);
  }

 private:
  std::string name_;
  int64_t budget_, sinks_;
};

// SnapKV selection with a per-layer budget (uniform: SnapKV; falling with depth: PyramidKV).
class SnapPolicy final : public KVPolicy {
 public:
  SnapPolicy(std::string name, std::vector<int64_t> budgets, int window, int kernel)
      : name_(std::move(name)), budgets_(std::move(budgets)), window_(window), kernel_(kernel) {
    SKV_CHECK(window > 0, "observation window {} must be positive", window);
    for (size_t l = 0; l < budgets_.size(); ++l)
      SKV_CHECK(budgets_[l] >= window, "{}: layer {} budget {} tokens is below the observation window of {} tokens; "
                "use a larger --kv-budget or a smaller --kv-window", name_, l, budgets_[l], window);
  }
  std::string name() const override { return name_; }
  int64_t budget(int layer, int, int64_t total) const override {
    SKV_CHECK(layer >= 0 && layer < static_cast<int>(budgets_.size()), "{}: layer {} outside the {} layers planned",
              name_, layer, budgets_.size());
    return std::min(total, budgets_[layer]);
  }
  QueryNeeds queries() const override { return {false, true}; }
  Tensor select(const CompressionInput& in, int64_t budget) override {
    ScoringSpec spec;
    spec.q = in.q_attn;
    spec.window = last_tokens_window(in.cur_len, in.hist_len, window_);
    spec.scale = in.attn_scale;
    spec.mode = ScoreMode::SoftmaxMean;
    spec.pool = PoolKind::Avg;
    spec.kernel = kernel_;
    return score_and_select(in, spec, budget);
  }

 private:
  std::string name_;
  std::vector<int64_t> budgets_;
  int window_, kernel_;
};

}  // namespace

Tensor kept_on_backend(Backend& be, const std::vector<int32_t>& kept, int rows, int heads, int64_t n) {
  SKV_CHECK(static_cast<int64_t>(kept.size()) == static_cast<int64_t>(rows) * heads * n,
            "internal: {} kept indices for {} x {} x {}", kept.size(), rows, heads, n);
  Tensor host = Tensor::external(const_cast<int32_t*>(kept.data()), {rows, heads, n}, DType::I32);
  if (be.device() != Device::CPU) return be.upload(host, MemCategory::Workspace);
  Tensor t = be.empty({rows, heads, n}, DType::I32, MemCategory::Workspace);
  std::copy(kept.begin(), kept.end(), t.data<int32_t>());
  return t;
}

std::vector<int32_t> kept_on_host(Backend& be, const Tensor& kept) {
  const Tensor h = kept.device() == Device::CPU ? kept : be.download(kept);
  return std::vector<int32_t>(h.data<int32_t>(), h.data<int32_t>() + h.numel());
}

std::unique_ptr<KVPolicy> make_full_policy() { return std::make_unique<FullPolicy>(); }

std::unique_ptr<KVPolicy> make_sliding_window_policy(int64_t budget) {
  return std::make_unique<RecentPolicy>("sliding-window", budget, 0);
}

std::unique_ptr<KVPolicy> make_streamingllm_policy(int64_t budget, int64_t sinks) {
  return std::make_unique<RecentPolicy>("streamingllm", budget, sinks);
}

std::unique_ptr<KVPolicy> make_snapkv_policy(int64_t budget, int depth, int window, int kernel) {
  return std::make_unique<SnapPolicy>("snapkv", std::vector<int64_t>(depth, budget), window, kernel);
}

std::vector<int64_t> pyramid_budgets(int64_t budget, int depth, int window, double beta) {
  SKV_CHECK(depth > 0 && beta > 1, "pyramid budgets: depth {} beta {}", depth, beta);
  // Every layer keeps at least its window, so the mean budget must hold one (else no split sums to B L).
  SKV_CHECK(budget >= window, "pyramidkv: --kv-budget {} tokens is below the observation window of {} tokens; use a "
            "larger --kv-budget or a smaller --kv-window", budget, window);
  // PyramidKV: min = B / beta, max = 2B - min, linear in depth, sum = B * depth.
  const int64_t lo = std::max<int64_t>(window, static_cast<int64_t>(std::floor(budget / beta)));
  const int64_t hi = std::max(lo, 2 * budget - lo);
  std::vector<int64_t> b(depth);
  int64_t sum = 0;
  for (int l = 0; l < depth; ++l) {
    b[l] = depth == 1 ? budget : hi - (hi - lo) * l / (depth - 1);
    sum += b[l];
  }
  // Integer steps leave a small remainder: hand it to the layers in order (the sum is exactly B * depth).
  for (int l = 0; sum != budget * depth; l = (l + 1) % depth) {
    const int64_t d = sum < budget * depth ? 1 : -1;
    if (d < 0 && b[l] <= window) continue;
    b[l] += d;
    sum += d;
  }
  return b;
}

std::unique_ptr<KVPolicy> make_pyramidkv_policy(int64_t budget, int depth, int window, int kernel, double beta) {
  return std::make_unique<SnapPolicy>("pyramidkv", pyramid_budgets(budget, depth, window, beta), window, kernel);
}

}  // namespace skv
