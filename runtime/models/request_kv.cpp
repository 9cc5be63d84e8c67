#include "runtime/models/request_kv.h"

#include <algorithm>

#include "kvcache/planner.h"
#include "parallel/communicator.h"

namespace skv {

RequestKV::RequestKV(Backend& be, Communicator& comm, KVPolicy* policy, const Schedule& schedule, int depth, int rows,
                     int local_heads, int head_dim, GenerateResult& res, KVPagePool* pages)
    : policy_(policy), alloc_(be.allocator()), kv_before_(alloc_.stats().cur(MemCategory::KV)), depth_(depth),
      shared_(pages != nullptr) {
  if (!policy_) {
    full_ = make_full_policy();
    policy_ = full_.get();
  }
  if (!shared_) alloc_.reset_peaks();
  policy_->set_communicator(&comm);
  policy_->begin_request();
  const int64_t token_bytes = RequestKV::token_bytes(rows, local_heads, head_dim);
  const KVPlan plan = plan_kv(*policy_, schedule, depth, token_bytes, kKVPageSlots);
  cache_ = std::make_unique<MultiScaleKVCache>(be, rows, local_heads, head_dim, depth, plan.pool_tokens, pages);
  cache_->set_scale_limits(plan.scale_limits());
  res.kv_store_bytes = plan.pool_bytes();
  res.kv_planned_peak_bytes = plan.peak_bytes();
}

int64_t RequestKV::store_tokens() const {
  int64_t n = 0;
  for (int l = 0; l < depth_; ++l) n += cache_->layer(l).len;
  return n;
}

void RequestKV::begin_scale(int64_t tokens, int64_t offset) { cache_->begin_scale(tokens, offset); }

void RequestKV::finish(GenerateResult& res) const {
  res.kv_peak_bytes = shared_ ? cache_->peak_bytes() : alloc_.stats().pk(MemCategory::KV) - kv_before_;
  res.kv_capped = cache_->capped();
}

}  // namespace skv
