// planner.cpp - replays the cache's append/compact bookkeeping with planned budgets (see planner.h).
#include "kvcache/planner.h"

#include <algorithm>

#include "runtime/check.h"

namespace skv {

KVPlan plan_kv(const KVPolicy& policy, const Schedule& schedule, int depth, int64_t token_bytes, int64_t page_slots) {
  SKV_CHECK(depth >= 0 && token_bytes >= 0, "KV plan: depth {} and token bytes {} must be >= 0", depth, token_bytes);
  KVPlan p;
  p.token_bytes = token_bytes;
  SKV_CHECK(page_slots >= 0, "KV plan: pages of {} slots", page_slots);
  p.page_slots = page_slots;
  p.layer_max.assign(depth, 0);
  std::vector<int64_t> len(depth, 0);
  int64_t live = 0;
  const int S = schedule.num_scales();
  for (int s = 0; s < S; ++s) {
    KVPlanScale ps;
    ps.scale = s;
    ps.tokens = schedule.tokens(s);
    p.transient_tokens = std::max(p.transient_tokens, ps.tokens);
    ps.live_peak = live;
    if (s + 1 < S) {  // the last scale's K/V are never stored
      for (int l = 0; l < depth; ++l) {
        const int64_t total = len[l] + ps.tokens;
        const int64_t n = std::min(total, std::max<int64_t>(0, policy.planned_budget(l, s, total)));
        live = checked_add(live, n - len[l], "KV plan tokens");  // grows before the gather, shrinks after: the larger state is the live one
        ps.live_peak = std::max(ps.live_peak, live);
        len[l] = n;
        p.layer_max[l] = std::max(p.layer_max[l], n);
      }
    }
    ps.store_tokens = live;
    p.store_peak_tokens = std::max(p.store_peak_tokens, live);
    p.pool_tokens = std::max(p.pool_tokens, ps.live_peak);
    p.scales.push_back(ps);
  }
  int64_t limit = 0;
  for (KVPlanScale& ps : p.scales) {
    limit = ps.scale >= policy.first_unplanned_scale() ? p.pool_tokens : std::max(limit, ps.live_peak);
    ps.limit = limit;
  }
  return p;
}

int64_t KVPlan::slot_bytes(int64_t slots) const {
  if (page_slots == 0) return checked_mul(slots, token_bytes, "KV pool bytes");
  return checked_mul(pages(slots), page_bytes(), "KV pool bytes");
}

int64_t KVPlan::step_bytes(size_t s) const {
  const KVPlanScale& ps = scales.at(s);
  return checked_add(slot_bytes(ps.limit), checked_mul(ps.tokens, token_bytes, "KV transient bytes"), "KV bytes of a step");
}

int64_t KVPlan::peak_bytes() const {
  int64_t b = 0;
  for (size_t s = 0; s < scales.size(); ++s) b = std::max(b, step_bytes(s));
  return b;
}

std::vector<int64_t> KVPlan::scale_limits() const {
  std::vector<int64_t> v;
  for (const KVPlanScale& s : scales) v.push_back(s.limit);
  return v;
}

}  // namespace skv
