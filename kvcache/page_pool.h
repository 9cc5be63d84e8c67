// page_pool.h - the KV page pool of one rank, shared by every request in flight.
// A request's KV cache (kvcache/multiscale_cache.h) takes its slots in pages of kKVPageSlots slots of its own
// shape: K and V of [rows, heads, kKVPageSlots, head_dim] in one allocation. The pool keeps the pages requests
// give back, by size, and hands them to the next request of that size (requests of one model and batch shape,
// the usual case, all share one size), so a request's memory comes and goes in pages the backend has already
// allocated and no KV allocation has a size the pool has not seen (a device's caching allocator then cannot
// fragment under the engine's traffic). A page stays with its request until the request ends (its layers share
// its slots); all its pages come back when it finishes or is cancelled. Free pages stay cached only as long as
// trim() allows: the engine keeps those the next iteration's requests will take and what its admission ledger
// leaves under the cap, so cached pages never take the measured KV peak past it.
// The page is counted in slots, not bytes, so a request's stores are split into the same extents whatever its
// batch rows and whether it runs alone or in the engine: its attention sums in the same order, and its tokens
// do not depend on what it was batched with.
// Not thread-safe: one rank's engine loop (or one generation alone) uses it.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "runtime/backend.h"

namespace skv {

// Slots per page: small enough that a request's last, partly used page wastes little (at most 63 slots of
// its ~1000 or more), large enough that a layer's store is a few extents, not hundreds.
constexpr int64_t kKVPageSlots = 64;

class KVPagePool {
 public:
  // A page's memory: F32 [bytes / 4] on the pool's backend.
  struct Page {
    Tensor mem;
    int64_t bytes() const { return static_cast<int64_t>(mem.nbytes()); }
  };

  explicit KVPagePool(Backend& backend) : be_(backend) {}
  KVPagePool(const KVPagePool&) = delete;
  KVPagePool& operator=(const KVPagePool&) = delete;

  Backend& backend() const { return be_; }

  Page acquire(int64_t bytes);  // a cached free page of that size, else a new one (MemCategory::KV)
  void release(Page page);      // back to the pool, cached until trim()
  // Frees cached pages: of each size it keeps up to keep[size] pages, and beyond those at most `extra_bytes`
  // more in all (the smaller sizes first).
  void trim(const std::map<int64_t, int64_t>& keep, int64_t extra_bytes);

  int64_t used_pages() const { return used_; }
  int64_t free_pages() const;
  int64_t held_bytes() const { return used_bytes_ + free_bytes_; }
  int64_t free_bytes() const { return free_bytes_; }
  int64_t allocated_pages() const { return allocated_; }  // pages ever taken from the backend (reuse shows here)
  int64_t peak_held_bytes() const { return peak_held_; }

 private:
  Backend& be_;
  std::map<int64_t, std::vector<Page>> free_;  // page bytes -> cached pages of that size
  int64_t used_ = 0, used_bytes_ = 0, free_bytes_ = 0, allocated_ = 0, peak_held_ = 0;
};

}  // namespace skv
