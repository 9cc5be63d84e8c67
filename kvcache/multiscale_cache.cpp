// multiscale_cache.cpp - the request's slot pool of pages, extents, append and in-place compaction (see
// multiscale_cache.h).
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
                                     int64_t pool_tokens, KVPagePool* pages, int64_t page_slots)
    : be_(backend), rows_(rows), heads_(heads), head_dim_(head_dim), pool_tokens_(pool_tokens), pages_(pages),
      page_slots_(page_slots), layers_(num_layers) {
  SKV_CHECK(pool_tokens >= 0 && rows > 0 && heads > 0 && head_dim > 0 && page_slots > 0,
            "KV cache: pool of {} tokens for {}x{}x{}, pages of {} slots", pool_tokens, rows, heads, head_dim, page_slots);
  if (!pages_) {
    own_pages_ = std::make_unique<KVPagePool>(be_);
    pages_ = own_pages_.get();
  }
  SKV_CHECK(&pages_->backend() == &be_, "internal: a KV cache on {} given a page pool of another backend", be_.name());
  reset();
}

MultiScaleKVCache::~MultiScaleKVCache() { reset(); }

void MultiScaleKVCache::set_scale_limits(std::vector<int64_t> limits) {
  for (size_t i = 0; i < limits.size(); ++i)
    SKV_CHECK(limits[i] >= 0 && limits[i] <= pool_tokens_ && (i == 0 || limits[i] >= limits[i - 1]),
              "KV cache: scale limits must rise to at most {} slots, got {} at scale {}", pool_tokens_, limits[i], i);
  scale_limits_ = std::move(limits);
}

void MultiScaleKVCache::reset() {
  for (auto& L : layers_) {
    L.extents.clear();
    L.len = 0;
    L.pos.clear();
  }
  free_.clear();
  page_k_.clear();  // the views first: a page's memory goes back with its last reference
  page_v_.clear();
  for (auto& p : held_) pages_->release(std::move(p));
  held_.clear();
  free_total_ = peak_live_ = peak_held_bytes_ = capped_ = 0;
  scale_ = -1;
}

int64_t MultiScaleKVCache::limit_now() const {
  if (scale_limits_.empty() || scale_ < 0) return pool_tokens_;
  return scale_limits_[std::min(static_cast<size_t>(scale_), scale_limits_.size() - 1)];
}

void MultiScaleKVCache::add_pages(int64_t slots) {
  const int64_t n = (slots + page_slots_ - 1) / page_slots_;
  const int64_t per = static_cast<int64_t>(rows_) * heads_ * page_slots_ * head_dim_;  // F32 elements of K (or V)
  for (int64_t i = 0; i < n; ++i) {
    free_[pool_slots()] = page_slots_;  // never merged with the previous page's free range: extents stay in one page
    held_.push_back(pages_->acquire(page_bytes()));
    const Tensor& m = held_.back().mem;
    page_k_.push_back(m.slice0(0, per).reshape({rows_, heads_, page_slots_, head_dim_}));
    page_v_.push_back(m.slice0(per, 2 * per).reshape({rows_, heads_, page_slots_, head_dim_}));
    free_total_ += page_slots_;
  }
  note_held();
}

void MultiScaleKVCache::note_held() {
  const int64_t bytes = checked_add(pool_bytes(), checked_mul(cur_len_, token_bytes(), "KV transient bytes"),
                                    "KV cache bytes");
  peak_held_bytes_ = std::max(peak_held_bytes_, bytes);
}

std::vector<KVSegment> MultiScaleKVCache::store_segments(int l) const {
  std::vector<KVSegment> segs;
  for (const auto& e : layers_[l].extents) {
    const size_t c = page_of(e.start);
    segs.push_back({&page_k_[c], &page_v_[c], e.len, {}, e.start % page_slots_});
  }
  return segs;
}

std::vector<KVExtent> MultiScaleKVCache::extents(int l, bool values) {
  std::vector<KVExtent> x;
  for (const auto& e : layers_[l].extents) {
    const size_t c = page_of(e.start);
    x.push_back({values ? &page_v_[c] : &page_k_[c], e.start % page_slots_, e.len});
  }
  return x;
}

void MultiScaleKVCache::begin_scale(int64_t tokens, int64_t offset) {
  cur_k_ = Tensor();
  cur_v_ = Tensor();
  cur_k_ = be_.empty({rows_, heads_, tokens, head_dim_}, dtype_, MemCategory::KV);
  cur_v_ = be_.empty({rows_, heads_, tokens, head_dim_}, dtype_, MemCategory::KV);
  cur_len_ = tokens;
  cur_offset_ = offset;
  note_held();
}

void MultiScaleKVCache::end_scale() {
  cur_k_ = Tensor();
  cur_v_ = Tensor();
  cur_len_ = 0;
}

int64_t MultiScaleKVCache::token_bytes() const {
  return static_cast<int64_t>(rows_) * heads_ * head_dim_ * 2 * static_cast<int64_t>(dtype_size(dtype_));
}

int64_t MultiScaleKVCache::pool_bytes() const {
  return checked_mul(pool_pages(), page_bytes(), "KV pool bytes");
}

int64_t MultiScaleKVCache::peak_bytes() const { return peak_held_bytes_; }

int64_t MultiScaleKVCache::live_tokens() const { return pool_slots() - free_total_; }

void MultiScaleKVCache::release(int64_t start, int64_t len) {
  if (len == 0) return;
  auto it = free_.emplace(start, len).first;
  if (it != free_.begin()) {  // merge with the free range before (in the same page)
    auto prev = std::prev(it);
    if (prev->first + prev->second == start && page_of(prev->first) == page_of(start)) {
      prev->second += it->second;
      free_.erase(it);
      it = prev;
    }
  }
  auto next = std::next(it);
  if (next != free_.end() && it->first + it->second == next->first && page_of(next->first) == page_of(it->first)) {
    it->second += next->second;
    free_.erase(next);
  }
  free_total_ += len;
}

void MultiScaleKVCache::grow(int l, int64_t n) {
  auto& L = layers_[l];
  int64_t need = n - L.len;  // append_current and compact have checked it against the scale's limit
  if (need > free_total_) add_pages(limit_now() - pool_slots());  // grow to the scale's limit at once
  while (need > 0) {
    // Prefer the free range right after the layer's last extent in its page (extends it), else the first.
    auto it = free_.end();
    if (!L.extents.empty()) {
      const int64_t end = L.extents.back().start + L.extents.back().len;
      if (page_of(end) == page_of(L.extents.back().start)) it = free_.find(end);  // not past its page
    }
    if (it == free_.end()) it = free_.begin();
    const int64_t take = std::min(need, it->second), start = it->first;
    const int64_t rest = it->second - take;
    free_.erase(it);
    if (rest > 0) free_[start + take] = rest;
    free_total_ -= take;
    auto& last = L.extents;
    if (!last.empty() && last.back().start + last.back().len == start && page_of(last.back().start) == page_of(start))
      last.back().len += take;
    else
      last.push_back({start, take});
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

void MultiScaleKVCache::append_current(int l) {
  auto& L = layers_[l];
  const int64_t old = L.len, n = old + cur_len_;
  SKV_CHECK(live_tokens() + cur_len_ <= limit_now(),
            "KV cache layer {}: {} + {} tokens exceed the plan ({} of {} slots in use)", l, L.len, cur_len_,
            live_tokens(), limit_now());
  grow(l, n);
  if (cur_len_ > 0) {  // token j of [store + transient] for j in [old, n): all from the transient
    std::vector<int32_t> idx(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) idx[i] = static_cast<int32_t>(i);
    Tensor kept_t = Tensor::external(idx.data(), {n}, DType::I32);
    if (be_.device() != Device::CPU) kept_t = be_.upload(kept_t, MemCategory::Workspace);
    be_.gather_extents(extents(l, false), old, cur_k_, kept_t, old, n);
    be_.gather_extents(extents(l, true), old, cur_v_, kept_t, old, n);
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
    SKV_CHECK(live_tokens() + n - old <= limit_now(),
              "KV compaction layer {}: keeping {} tokens needs {} more slots, {} of the plan's {} in use", l, n, n - old,
              live_tokens(), limit_now());
    grow(l, n);
  }
  if (n > 0) {
    be_.gather_extents(extents(l, false), old, cur_k_, kept, 0, n);
    be_.gather_extents(extents(l, true), old, cur_v_, kept, 0, n);
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
  scale_ = scale;
  const std::vector<KVSegment> hist = store_segments(l);
  const CompressionInput in = make_input(l, scale, schedule, hist, q_raw, q_attn, attn_scale, head_offset);
  policy.observe(in);
  const int64_t total = L.len + cur_len_;
  int64_t b = std::min(total, std::max<int64_t>(0, policy.budget(l, scale, total)));
  const int64_t room = std::max<int64_t>(0, limit_now() - live_tokens());
  if (b > L.len + room) {  // a budget decided during the request that the plan did not foresee
    b = L.len + room;
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
