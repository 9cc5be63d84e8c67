// multiscale_cache.cpp - slot pool, extents, append and in-place compaction (see multiscale_cache.h).
#include "kvcache/multiscale_cache.h"

#include <algorithm>

#include "runtime/check.h"

namespace skv {

std::vector<KVSegment> CompressionInput::all_segments() const {
  std::vector<KVSegment> segs;
  if (hist) segs = *hist;
  segs.push_back({cur_k, cur_v, cur_len, {}, 0});
  return segs;
}

MultiScaleKVCache::MultiScaleKVCache(Backend& backend, int rows, int heads, int head_dim, int num_layers,
                                     int64_t pool_tokens, DType dtype)
    : be_(backend), rows_(rows), heads_(heads), head_dim_(head_dim), dtype_(dtype), pool_tokens_(pool_tokens),
      layers_(num_layers) {
  SKV_CHECK(dtype == DType::F32, "the KV cache supports F32 on this backend");
  SKV_CHECK(pool_tokens >= 0 && rows > 0 && heads > 0 && head_dim > 0, "KV cache: pool of {} tokens for {}x{}x{}",
            pool_tokens, rows, heads, head_dim);
  if (pool_tokens > 0) {
    pool_k_ = be_.empty({rows, heads, pool_tokens, head_dim}, dtype, MemCategory::KV);
    pool_v_ = be_.empty({rows, heads, pool_tokens, head_dim}, dtype, MemCategory::KV);
  }
  reset();
}

void MultiScaleKVCache::reset() {
  for (auto& L : layers_) {
    L.extents.clear();
    L.len = 0;
    L.pos.clear();
  }
  free_.clear();
  if (pool_tokens_ > 0) free_[0] = pool_tokens_;
  free_total_ = pool_tokens_;
  peak_live_ = 0;
  capped_ = 0;
}

std::vector<KVSegment> MultiScaleKVCache::store_segments(int l) const {
  std::vector<KVSegment> segs;
  for (const auto& e : layers_[l].extents) segs.push_back({&pool_k_, &pool_v_, e.len, {}, e.start});
  return segs;
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

int64_t MultiScaleKVCache::pool_bytes() const {
  return static_cast<int64_t>(pool_k_.defined() ? pool_k_.nbytes() + pool_v_.nbytes() : 0);
}

int64_t MultiScaleKVCache::live_tokens() const { return pool_tokens_ - free_total_; }

void MultiScaleKVCache::release(int64_t start, int64_t len) {
  if (len == 0) return;
  auto it = free_.emplace(start, len).first;
  if (it != free_.begin()) {  // merge with the free range before
    auto prev = std::prev(it);
    if (prev->first + prev->second == start) {
      prev->second += it->second;
      free_.erase(it);
      it = prev;
    }
  }
  auto next = std::next(it);
  if (next != free_.end() && it->first + it->second == next->first) {
    it->second += next->second;
    free_.erase(next);
  }
  free_total_ += len;
}

void MultiScaleKVCache::grow(int l, int64_t n) {
  auto& L = layers_[l];
  int64_t need = n - L.len;
  SKV_CHECK(need <= free_total_, "internal: KV pool exhausted (layer {} needs {} slots, {} free of {})", l, need,
            free_total_, pool_tokens_);
  while (need > 0) {
    // Prefer the free range right after the layer's last extent (extends it), else the first free range.
    auto it = free_.end();
    if (!L.extents.empty()) it = free_.find(L.extents.back().start + L.extents.back().len);
    if (it == free_.end()) it = free_.begin();
    const int64_t take = std::min(need, it->second), start = it->first;
    const int64_t rest = it->second - take;
    free_.erase(it);
    if (rest > 0) free_[start + take] = rest;
    free_total_ -= take;
    if (!L.extents.empty() && L.extents.back().start + L.extents.back().len == start)
      L.extents.back().len += take;
    else
      L.extents.push_back({start, take});
    need -= take;
  }
  peak_live_ = std::max(peak_live_, live_tokens());
}

void MultiScaleKVCache::shrink(int l, int64_t n) {
  auto& L = layers_[l];
  int64_t drop = L.len - n;
  while (drop > 0) {
    auto& e = L.extents.back();
    const int64_t d = std::min(drop, e.len);
    release(e.start + e.len - d, d);
    e.len -= d;
    drop -= d;
    if (e.len == 0) L.extents.pop_back();
  }
}

std::vector<int32_t> MultiScaleKVCache::slot_map(int l, int64_t n) const {
  std::vector<int32_t> m;
  m.reserve(static_cast<size_t>(n));
  for (const auto& e : layers_[l].extents)
    for (int64_t i = 0; i < e.len && static_cast<int64_t>(m.size()) < n; ++i) m.push_back(static_cast<int32_t>(e.start + i));
  return m;
}

void MultiScaleKVCache::append_current(int l) {
  auto& L = layers_[l];
  const int64_t old = L.len, n = old + cur_len_;
  SKV_CHECK(cur_len_ <= free_total_, "KV cache layer {}: {} + {} tokens exceed the planned pool ({} free of {})", l,
            L.len, cur_len_, free_total_, pool_tokens_);
  grow(l, n);
  std::vector<int32_t> shared(static_cast<size_t>(cur_len_));
  for (int64_t i = 0; i < cur_len_; ++i) shared[i] = static_cast<int32_t>(old + i);
  // Gather "token j of [store + transient]" for j in [old, n) only: a slot map for those positions.
  std::vector<int32_t> slots = slot_map(l, n);
  std::vector<int32_t> tail(slots.begin() + old, slots.end());
  Tensor slot_t = Tensor::external(tail.data(), {cur_len_}, DType::I32);
  std::vector<int32_t> idx(static_cast<size_t>(cur_len_));
  for (int64_t i = 0; i < cur_len_; ++i) idx[i] = static_cast<int32_t>(i);  // all from the transient (hist_len 0)
  Tensor kept_t = Tensor::external(idx.data(), {cur_len_}, DType::I32);
  if (be_.device() != Device::CPU) {
    slot_t = be_.upload(slot_t, MemCategory::Workspace);
    kept_t = be_.upload(kept_t, MemCategory::Workspace);
  }
  if (cur_len_ > 0) {
    be_.gather_slots(pool_k_, slot_t, 0, cur_k_, kept_t, cur_len_);
    be_.gather_slots(pool_v_, slot_t, 0, cur_v_, kept_t, cur_len_);
  }
  if (track_pos_) {
    const int64_t RH = static_cast<int64_t>(rows_) * heads_;
    std::vector<int32_t> pos(static_cast<size_t>(RH * n));
    for (int64_t rh = 0; rh < RH; ++rh) {
      std::copy(L.pos.begin() + rh * old, L.pos.begin() + (rh + 1) * old, pos.begin() + rh * n);
      for (int64_t i = 0; i < cur_len_; ++i) pos[rh * n + old + i] = static_cast<int32_t>(cur_offset_ + i);
    }
    L.pos.swap(pos);
  }
  L.len = n;
}

void MultiScaleKVCache::compact(int l, const std::vector<int32_t>& kept, int64_t n) {
  SKV_CHECK(static_cast<int64_t>(kept.size()) == static_cast<int64_t>(rows_) * heads_ * n,
            "KV compaction layer {}: {} indices for {} x {}", l, kept.size(), static_cast<int64_t>(rows_) * heads_, n);
  compact(l, kept_on_backend(be_, kept, rows_, heads_, n), n);
}

void MultiScaleKVCache::compact(int l, const Tensor& kept, int64_t n) {
  auto& L = layers_[l];
  const int64_t RH = static_cast<int64_t>(rows_) * heads_, old = L.len, total = old + cur_len_;
  SKV_CHECK(kept.dtype() == DType::I32 && kept.numel() == RH * n && kept.device() == be_.device(),
            "KV compaction layer {}: kept {} for {} x {} on {}", l, kept.describe(), RH, n, be_.name());
  SKV_CHECK(n <= total, "KV compaction layer {}: keeping {} of {} tokens", l, n, total);
  std::vector<int32_t> host;  // the indices on the host: always on the CPU, when tracking positions elsewhere
  const int32_t* k = nullptr;
  if (be_.device() == Device::CPU) {
    k = kept.data<int32_t>();
  } else if (track_pos_) {
    host = kept_on_host(be_, kept);
    k = host.data();
  }
  if (k)
    for (int64_t rh = 0; rh < RH; ++rh)
      for (int64_t j = 0; j < n; ++j) {
        const int32_t i = k[rh * n + j];
        SKV_CHECK(i >= 0 && i < total && (j == 0 || i > k[rh * n + j - 1]),
                  "KV compaction layer {}: kept indices must be ascending in [0, {})", l, total);
      }
  if (n > old) {
    SKV_CHECK(n - old <= free_total_, "KV compaction layer {}: keeping {} tokens needs {} more slots, {} free of {}", l,
              n, n - old, free_total_, pool_tokens_);
    grow(l, n);
  }
  std::vector<int32_t> slots = slot_map(l, std::max(old, n));
  Tensor slot_t = Tensor::external(slots.data(), {static_cast<int64_t>(slots.size())}, DType::I32);
  if (be_.device() != Device::CPU) slot_t = be_.upload(slot_t, MemCategory::Workspace);
  if (n > 0) {
    be_.gather_slots(pool_k_, slot_t, old, cur_k_, kept, n);
    be_.gather_slots(pool_v_, slot_t, old, cur_v_, kept, n);
  }
  if (track_pos_) {
    std::vector<int32_t> pos(static_cast<size_t>(RH * n));
    for (int64_t rh = 0; rh < RH; ++rh)
      for (int64_t j = 0; j < n; ++j) {
        const int32_t i = k[rh * n + j];
        pos[rh * n + j] = i < old ? L.pos[rh * old + i] : static_cast<int32_t>(cur_offset_ + (i - old));
      }
    L.pos.swap(pos);
  }
  if (n < old) shrink(l, n);
  L.len = n;
}

CompressionInput MultiScaleKVCache::make_input(int l, int scale, const Schedule& schedule,
                                              const std::vector<KVSegment>& hist, const Tensor* q_raw,
                                              const Tensor* q_attn, float attn_scale, int head_offset) {
  CompressionInput in;
  in.layer = l;
  in.scale = scale;
  in.schedule = &schedule;
  in.backend = &be_;
  in.hist = &hist;
  in.hist_len = layers_[l].len;
  in.cur_k = &cur_k_;
  in.cur_v = &cur_v_;
  in.cur_len = cur_len_;
  in.q_raw = q_raw;
  in.q_attn = q_attn;
  in.attn_scale = attn_scale;
  in.rows = rows_;
  in.heads = heads_;
  in.head_dim = head_dim_;
  in.head_offset = head_offset;
  return in;
}

Tensor MultiScaleKVCache::select_only(int l, int scale, KVPolicy& policy, const Schedule& schedule,
                                                    const Tensor* q_raw, const Tensor* q_attn, float attn_scale,
                                                    int head_offset) {
  const std::vector<KVSegment> hist = store_segments(l);
  const CompressionInput in = make_input(l, scale, schedule, hist, q_raw, q_attn, attn_scale, head_offset);
  const int64_t total = in.total();
  const int64_t b = std::min(total, std::max<int64_t>(0, policy.budget(l, scale, total)));
  return b < total ? policy.select(in, b) : Tensor();
}

int64_t MultiScaleKVCache::update(int l, int scale, KVPolicy& policy, const Schedule& schedule, const Tensor* q_raw,
                                  const Tensor* q_attn, float attn_scale, int head_offset) {
  auto& L = layers_[l];
  const std::vector<KVSegment> hist = store_segments(l);
  const CompressionInput in = make_input(l, scale, schedule, hist, q_raw, q_attn, attn_scale, head_offset);
  policy.observe(in);
  const int64_t total = L.len + cur_len_;
  int64_t b = std::min(total, std::max<int64_t>(0, policy.budget(l, scale, total)));
  if (b > L.len + free_total_) {  // a budget decided during the request that the plan did not foresee
    b = L.len + free_total_;
    ++capped_;
  }
  if (b >= total) {
    append_current(l);
    return L.len;
  }
  compact(l, policy.select(in, b), b);
  return L.len;
}

}  // namespace skv
