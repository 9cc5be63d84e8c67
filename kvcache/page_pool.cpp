// page_pool.cpp - see page_pool.h.
#include "kvcache/page_pool.h"

#include <algorithm>

#include "runtime/check.h"

namespace skv {

KVPagePool::Page KVPagePool::acquire(int64_t bytes) {
  SKV_CHECK(bytes > 0 && bytes % 4 == 0, "KV page pool: a page of {} bytes (must be a positive multiple of 4)", bytes);
  Page p;
  auto it = free_.find(bytes);
  if (it != free_.end() && !it->second.empty()) {
    p = std::move(it->second.back());
    it->second.pop_back();
    free_bytes_ -= bytes;
  } else {
    p.mem = be_.empty({bytes / 4}, DType::F32, MemCategory::KV);
    ++allocated_;
  }
  ++used_;
  used_bytes_ += bytes;
  peak_held_ = std::max(peak_held_, held_bytes());
  return p;
}

void KVPagePool::release(Page page) {
  const int64_t bytes = page.bytes();
  SKV_CHECK(used_ > 0 && used_bytes_ >= bytes && page.mem.defined(),
            "internal: a KV page of {} bytes released to a pool with {} pages ({} bytes) in use", bytes, used_,
            used_bytes_);
  --used_;
  used_bytes_ -= bytes;
  free_bytes_ += bytes;
  free_[bytes].push_back(std::move(page));
}

void KVPagePool::trim(const std::map<int64_t, int64_t>& keep, int64_t extra_bytes) {
  int64_t extra = std::max<int64_t>(0, extra_bytes);
  for (auto& [bytes, pages] : free_) {
    const auto k = keep.find(bytes);
    const int64_t n = static_cast<int64_t>(pages.size());
    const int64_t reserved = std::min(n, k == keep.end() ? 0 : std::max<int64_t>(0, k->second));
    const int64_t fit = std::min(n - reserved, extra / bytes);  // more of this size, while the extra room lasts
    extra -= fit * bytes;
    for (int64_t drop = n - reserved - fit; drop > 0; --drop) {
      pages.pop_back();
      free_bytes_ -= bytes;
    }
  }
}

int64_t KVPagePool::free_pages() const {
  int64_t n = 0;
  for (const auto& [bytes, pages] : free_) n += static_cast<int64_t>(pages.size());
  return n;
}

}  // namespace skv
