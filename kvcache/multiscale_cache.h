// multiscale_cache.h - the multi-scale KV cache of one request on one rank.
// All layers' stores live in ONE slot pool per request, k, v [rows, heads, slots, head_dim], made of pages of
// kKVPageSlots slots from the rank's KV page pool (kvcache/page_pool.h: shared by every request in flight). It grows
// with the request, at most once per scale, to the memory plan's limit of the scale that runs (kvcache/planner.h:
// the largest sum of the stores up to that scale, rounded up to whole pages), so the request holds what its stores
// need so far, not its peak from the first scale, and the peak is still known before the first scale. A layer's
// store is an ordered list of slot extents of that pool (the same slots for every row and head; an extent never
// crosses a page). The current scale's K/V live in ONE transient buffer shared by all layers: attention reads [store
// extents + transient], then the layer either appends the transient tokens or the policy compacts [store +
// transient] into its own slots in place (a gather across its extents, never concatenate-then-evict) and gives the
// slots it no longer needs back to the request's pool, where the next layer to grow takes them. So a layer holds
// exactly its current length, budgets may move between layers from scale to scale without copies, and the KV bytes
// at any moment are the pages plus one scale's transient K/V. The last scale's K/V are never stored. The pages go
// back to the rank's pool when the request ends (finished or cancelled).
// When a policy decides budgets during the request (ScaleKV online), a layer can only grow into what the
// plan allows: budgets beyond it are cut to what the pool may hold (counted in capped()).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "kvcache/page_pool.h"
#include "kvcache/policy.h"
#include "runtime/backend.h"

namespace skv {

class MultiScaleKVCache {
 public:
  struct Extent {
    int64_t start = 0, len = 0;  // pool slots [start, start + len), inside one page
  };
  struct Layer {
    std::vector<Extent> extents;  // in token order
    int64_t len = 0;
    std::vector<int32_t> pos;     // [rows * heads * len] absolute position of each stored token, when tracked
  };

  // pool_tokens: the most slots the pool may use (the plan's pool_tokens), at every scale unless
  // set_scale_limits() says more precisely. Pages come from `pages` (the rank's pool, which must outlive the
  // cache), or, when null, from a pool of the cache's own. Nothing is allocated until a store first needs slots.
  // `page_slots`: slots per page (the plan must count the same; tests use small pages).
  MultiScaleKVCache(Backend& backend, int rows, int heads, int head_dim, int num_layers, int64_t pool_tokens,
                    KVPagePool* pages = nullptr, int64_t page_slots = kKVPageSlots);
  ~MultiScaleKVCache();
  MultiScaleKVCache(const MultiScaleKVCache&) = delete;
  MultiScaleKVCache& operator=(const MultiScaleKVCache&) = delete;
  // The most slots the pool may use while scale s runs (KVPlan::scale_limits(): never decreasing, at most
  // pool_tokens). When a store needs more slots than are free, the pool grows by whole pages to the limit.
  void set_scale_limits(std::vector<int64_t> limits);
  int64_t page_slots() const { return page_slots_; }
  int64_t page_bytes() const { return page_slots_ * token_bytes(); }  // K and V of a page's slots

  int num_layers() const { return static_cast<int>(layers_.size()); }
  int rows() const { return rows_; }
  int heads() const { return heads_; }
  int head_dim() const { return head_dim_; }
  const Layer& layer(int l) const { return layers_[l]; }
  // Keep Layer::pos up to date (tests and traces; off by default). On a device backend it downloads the
  // kept indices of every compaction: a host synchronisation the production path never makes.
  void track_positions(bool on) { track_pos_ = on; }
  int64_t len(int l) const { return layers_[l].len; }
  // The layer's store as attention segments (views into the pool), in token order.
  std::vector<KVSegment> store_segments(int l) const;

  // Allocates the transient buffers for a scale of `tokens` tokens starting at absolute `offset`.
  void begin_scale(int64_t tokens, int64_t offset);
  void end_scale();  // frees the transient buffers
  Tensor& cur_k() { return cur_k_; }
  Tensor& cur_v() { return cur_v_; }
  int64_t cur_len() const { return cur_len_; }
  int64_t cur_offset() const { return cur_offset_; }

  // Store the transient tokens after the layer's current ones (within the limit of the last update's scale).
  void append_current(int l);
  // Keep `kept` (I32 [rows, heads, n] on this cache's backend, ascending indices into [store + transient])
  // as the new store. On the CPU the indices are checked; on a device they stay there.
  void compact(int l, const Tensor& kept, int64_t n);
  void compact(int l, const std::vector<int32_t>& kept, int64_t n);  // host indices (tests): uploaded
  // Runs the policy for layer l after its attention at `scale`: observe, then append or select + compact.
  // Returns the layer's new length.
  int64_t update(int l, int scale, KVPolicy& policy, const Schedule& schedule, const Tensor* q_raw,
                 const Tensor* q_attn, float attn_scale, int head_offset);
  // The selection the policy would make for layer l now, without storing anything (parity checks run
  // the official code's selection at the last scale, whose K/V are never stored): kept I32 [rows, heads, n]
  // on this cache's backend, or an undefined tensor when the policy keeps everything.
  Tensor select_only(int l, int scale, KVPolicy& policy, const Schedule& schedule, const Tensor* q_raw,
                     const Tensor* q_attn, float attn_scale, int head_offset);

  int64_t token_bytes() const;  // K and V of one slot of every (row, head)
  int64_t pool_tokens() const { return pool_tokens_; }  // the most slots the pool may use
  int64_t pool_slots() const { return pool_pages() * page_slots_; }  // slots the pool holds now (its pages)
  int64_t pool_pages() const { return static_cast<int64_t>(held_.size()); }
  int64_t pool_bytes() const;        // bytes of the pool now (its pages)
  int64_t live_tokens() const;       // slots in use
  int64_t peak_live_tokens() const { return peak_live_; }
  int64_t free_tokens() const { return free_total_; }  // free slots of the pages held
  // The most KV bytes the cache held at once: its pages plus the transient K/V.
  int64_t peak_bytes() const;
  int64_t capped() const { return capped_; }  // compressions cut to the plan (see the header comment)
  void reset();                      // every layer empty, the pages given back

 private:
  CompressionInput make_input(int l, int scale, const Schedule& schedule, const std::vector<KVSegment>& hist,
                              const Tensor* q_raw, const Tensor* q_attn, float attn_scale, int head_offset);
  void grow(int l, int64_t n);    // give layer l slots for tokens [len, n)
  void shrink(int l, int64_t n);  // return the slots of tokens [n, len) to the pool
  std::vector<KVExtent> extents(int l, bool values);  // the layer's store for gather_extents
  void release(int64_t start, int64_t len);
  size_t page_of(int64_t slot) const { return static_cast<size_t>(slot / page_slots_); }  // pages are equal
  int64_t limit_now() const;  // the limit of the current scale
  void add_pages(int64_t slots);  // enough pages for `slots` more slots
  void note_held();               // updates the peak of pages + transient bytes

  Backend& be_;
  int rows_, heads_, head_dim_;
  DType dtype_ = DType::F32;
  int64_t pool_tokens_;
  std::unique_ptr<KVPagePool> own_pages_;  // when no pool was given
  KVPagePool* pages_;
  int64_t page_slots_;
  std::vector<int64_t> scale_limits_;
  int scale_ = -1;  // the scale of the last update(); -1: none yet
  std::vector<KVPagePool::Page> held_;     // the request's pages, in slot order
  std::deque<Tensor> page_k_, page_v_;     // each page's K and V views, [rows, heads, page_slots, head_dim] (a
                                           // deque: segments handed out keep pointing at them as pages are added)
  std::vector<Layer> layers_;
  std::map<int64_t, int64_t> free_;  // start -> length, coalesced within a page
  int64_t free_total_ = 0, peak_live_ = 0, peak_held_bytes_ = 0, capped_ = 0;
  bool track_pos_ = false;
  Tensor cur_k_, cur_v_;
  int64_t cur_len_ = 0, cur_offset_ = 0;
};

}  // namespace skv
