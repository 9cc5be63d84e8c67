// planner.h - the KV memory plan: what the cache will hold, scale by scale, before anything runs.
// plan_kv replays the cache's own bookkeeping (kvcache/multiscale_cache.h) with the policy's planned
// budgets: every layer, in the order the model runs them, appends or compacts after its attention,
// growing into or giving back pool slots. Its maximum live slot count is the size of the pool the
// cache allocates, so the planned peak (pool + the largest scale's transient K/V) is what the
// accounting allocator then measures, byte for byte. Two store figures are reported because they
// differ: `store_peak_tokens`, the largest sum of the layers' stores at a scale boundary (the paper's
// Table 1 measure: the tokens kept before the last scale), and `pool_tokens`, which also covers the
// moments inside a scale when early layers have grown to their new budget and later ones not yet shrunk.
// The cache's slot pool grows with the request (kvcache/multiscale_cache.h): while scale s runs it holds at
// most `limit` slots, the largest live_peak up to s (from the policy's first unplanned scale on: pool_tokens),
// so a request's memory rises scale by scale instead of being reserved whole from its first step.
// With pages (the cache takes its slots in pages from a KV page pool, kvcache/page_pool.h) `limit` slots hold
// whole pages: ceil(limit / page_slots) x page_slots slots; without (page_slots 0), exactly limit.
#pragma once

#include <cstdint>
#include <vector>

#include "kvcache/policy.h"
#include "kvcache/schedule.h"
#include "runtime/check.h"

namespace skv {

struct KVPlanScale {
  int scale = 0;
  int64_t tokens = 0;        // h * w * t of the scale
  int64_t store_tokens = 0;  // sum over layers of the store after the scale (what the next scale attends to)
  int64_t live_peak = 0;     // largest sum of the stores while the scale runs
  int64_t limit = 0;         // the most slots the cache's pool may hold while the scale runs (never decreasing)
};

struct KVPlan {
  std::vector<KVPlanScale> scales;
  std::vector<int64_t> layer_max;    // per layer, its largest store
  int64_t store_peak_tokens = 0;     // max over scale boundaries of the summed stores
  int64_t pool_tokens = 0;           // max over the whole request of the summed stores (the pool's final size)
  int64_t transient_tokens = 0;      // the largest scale (one layer's current K/V)
  // Bytes of one token in one layer on this rank: rows * heads * head_dim * (bytes of K + bytes of V).
  int64_t token_bytes = 0;
  int64_t page_slots = 0;  // slots per page of the cache (0: no pages, slots are counted one by one)
  int64_t page_bytes() const { return checked_mul(page_slots, token_bytes, "KV page bytes"); }
  int64_t pages(int64_t slots) const { return page_slots > 0 ? (slots + page_slots - 1) / page_slots : 0; }
  // Checked: a plan past 2^63 bytes (a huge batch) is an error, never a wrapped or negative figure.
  int64_t store_peak_bytes() const { return checked_mul(store_peak_tokens, token_bytes, "KV store bytes"); }
  int64_t pool_bytes() const { return slot_bytes(pool_tokens); }
  int64_t transient_bytes() const { return checked_mul(transient_tokens, token_bytes, "KV transient bytes"); }
  // What the cache holds for `slots` pool slots: whole pages with paging.
  int64_t slot_bytes(int64_t slots) const;
  // What scale s holds at its peak: the pages of its limit and its transient K/V.
  int64_t step_bytes(size_t s) const;
  int64_t peak_bytes() const;  // max over scales of step_bytes
  std::vector<int64_t> scale_limits() const;  // every scale's limit
};

// `token_bytes` as above; pass rows * local heads * head_dim * (k + v element size). `page_slots` > 0: the
// cache takes its slots in pages of that many (MultiScaleKVCache, kKVPageSlots).
KVPlan plan_kv(const KVPolicy& policy, const Schedule& schedule, int depth, int64_t token_bytes,
               int64_t page_slots = 0);

}  // namespace skv
