#include "kvcache/multiscale_cache.h"

#include <algorithm>

#include "runtime/check.h"

namespace skv {

MultiScaleKVCache::MultiScaleKVCache(Backend& backend, int rows, int heads, int head_dim,
                                     const std::vector<int64_t>& capacity, DType dtype)
    : be_(backend), rows_(rows), heads_(heads), head_dim_(head_dim), dtype_(dtype), layers_(capacity.size()) {
  SKV_CHECK(dtype == DType::F32, "the KV cache supports F32 on this backend");
  for (size_t l = 0; l < capacity.size(); ++l) {
    auto& L = layers_[l];
    if (capacity[l] == 0) continue;
    L.k = be_.empty({rows, heads, capacity[l], head_dim}, dtype, MemCategory::KV);
    L.v = be_.empty({rows, heads, capacity[l], head_dim}, dtype, MemCategory::KV);
    L.pos.assign(static_cast<size_t>(rows) * heads * capacity[l], -1);
  }
}

void MultiScaleKVCache::begin_scale(int64_t tokens, int64_t offset) {
  cur_k_ = Tensor();
  cur_v_ = Tensor();
  cur_k_ = be_.empty({rows_, heads_, tokens, head_dim_}, dtype_, MemCategory::KV);
  cur_v_ = be_.empty({rows_, heads_, tokens, head_dim_}, dtype_, MemCategory::KV);
  cur_len_ = tokens;
  cur_offset_ = offset;
}

void MultiScaleKVCache::end_scale() {
  cur_k_ = Tensor();
  cur_v_ = Tensor();
  cur_len_ = 0;
}

void MultiScaleKVCache::append_current(int l) {
  auto& L = layers_[l];
  SKV_CHECK(L.len + cur_len_ <= L.capacity(), "KV cache layer {}: {} + {} tokens exceed the planned capacity {}", l,
            L.len, cur_len_, L.capacity());
  be_.copy_tokens(cur_k_, cur_len_, L.k, L.len);
  be_.copy_tokens(cur_v_, cur_len_, L.v, L.len);
  const int64_t cap = L.capacity();
  for (int64_t rh = 0; rh < static_cast<int64_t>(rows_) * heads_; ++rh)
    for (int64_t i = 0; i < cur_len_; ++i) L.pos[rh * cap + L.len + i] = static_cast<int32_t>(cur_offset_ + i);
  L.len += cur_len_;
}

void MultiScaleKVCache::compact(int l, const std::vector<int32_t>& kept, int64_t n) {
  auto& L = layers_[l];
  const int64_t RH = static_cast<int64_t>(rows_) * heads_, total = L.len + cur_len_, cap = L.capacity();
  SKV_CHECK(static_cast<int64_t>(kept.size()) == RH * n, "KV compaction layer {}: {} indices for {} x {}", l,
            kept.size(), RH, n);
  SKV_CHECK(n <= cap, "KV compaction layer {}: keeping {} tokens exceeds the planned capacity {}", l, n, cap);
  for (int64_t rh = 0; rh < RH; ++rh)
    for (int64_t j = 0; j < n; ++j) {
      const int32_t i = kept[rh * n + j];
      SKV_CHECK(i >= 0 && i < total && (j == 0 || i > kept[rh * n + j - 1]),
                "KV compaction layer {}: kept indices must be ascending in [0, {})", l, total);
    }
  Tensor kept_t = Tensor::external(const_cast<int32_t*>(kept.data()), {rows_, heads_, n}, DType::I32);
  if (be_.device() != Device::CPU) kept_t = be_.upload(kept_t, MemCategory::Workspace);
  be_.gather_tokens(L.k, L.len, cur_k_, kept_t, n);
  be_.gather_tokens(L.v, L.len, cur_v_, kept_t, n);
  for (int64_t rh = 0; rh < RH; ++rh)
    for (int64_t j = 0; j < n; ++j) {
      const int32_t i = kept[rh * n + j];
      L.pos[rh * cap + j] = i < L.len ? L.pos[rh * cap + i] : static_cast<int32_t>(cur_offset_ + (i - L.len));
    }
  L.len = n;
}

int64_t MultiScaleKVCache::update(int l, int scale, KVPolicy& policy, const Schedule& schedule, const Tensor* q,
                                  float attn_scale, int head_offset) {
  auto& L = layers_[l];
  const int64_t total = L.len + cur_len_;
  const int64_t b = policy.budget(l, scale, total);
  if (b >= total) {
    append_current(l);
    return L.len;
  }
  CompressionInput in;
  in.layer = l;
  in.scale = scale;
  in.schedule = &schedule;
  in.backend = &be_;
  in.hist_k = &L.k;
  in.hist_v = &L.v;
  in.hist_len = L.len;
  in.cur_k = &cur_k_;
  in.cur_v = &cur_v_;
  in.cur_len = cur_len_;
  in.q = q;
  in.hist_pos = &L.pos;
  in.hist_cap = L.capacity();
  in.attn_scale = attn_scale;
  in.head_offset = head_offset;
  std::vector<int32_t> kept;
  policy.select(in, b, kept);
  compact(l, kept, b);
  return L.len;
}

int64_t MultiScaleKVCache::store_bytes() const {
  int64_t n = 0;
  for (const auto& L : layers_) n += static_cast<int64_t>(L.k.nbytes() + L.v.nbytes());
  return n;
}

void MultiScaleKVCache::reset() {
  for (auto& L : layers_) L.len = 0;
}

}  // namespace skv
