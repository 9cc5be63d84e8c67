// admission.h - exact, preemption-free admission of requests into one KV memory cap (the engine's
// scheduler decides with it; DESIGN.md "Data flow of requests").
// A request's KV footprint at every future scale step is known before it runs: the memory plan
// (kvcache/planner.h) replays its policy's budgets. A request's cache grows its slot pool scale by scale, held
// to the plan's limit of each scale (the largest sum of its stores so far), and frees it when the request
// ends, so step i holds at most that limit plus scale i's transient K/V: a curve that rises with the scales
// instead of the request's peak from its first step. The ledger keeps, for every future iteration t
// (t = 0 is the next one), the sum of what the requests in flight will hold then. A waiting request is
// admitted only if adding its own curve, aligned to start at the next iteration, keeps every future
// iteration under the cap (and, optionally, under a per-iteration query-token bound). Since curves only
// describe the future and nobody ever asks for more than its plan, the measured peak cannot pass the cap
// and no request is ever evicted or recomputed. Finishing or cancelling a request returns its share of
// every future iteration at once.
#pragma once

#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "kvcache/planner.h"

namespace skv {

// What a request needs during one of its scale steps.
struct StepDemand {
  int64_t kv_bytes = 0;     // store + transient K/V while the step runs (this rank)
  int64_t step_tokens = 0;  // query tokens it adds to the iteration (rows x the scale's tokens)
  // Bytes outside the KV cache it holds or uses while the step runs (this rank): its conditioning, latent
  // map, the step's activations, its decode (engine/request_memory.h). Counted under a memory cap only.
  int64_t other_bytes = 0;
  // Bytes it needs once the step has run, one request after another (its decode, its previews): the
  // iteration's requests need the largest of theirs, not the sum. Counted under a memory cap only.
  int64_t decode_bytes = 0;
  // KV pages its cache holds while the step runs and the bytes of one (part of kv_bytes; kvcache/page_pool.h).
  int64_t kv_pages = 0, kv_page_bytes = 0;
};

// The demand of each of a request's steps, from its memory plan: step k holds its scale's limit
// (plan.scales[k].limit, in whole pages when the plan has pages) plus scale k's transient K/V
// (KVPlan::step_bytes); its queries are rows x tokens.
std::vector<StepDemand> request_demand(const KVPlan& plan, int rows);

// The limits of one iteration. 0 tokens: no bound on the query tokens of an iteration. memory_cap_bytes
// (0: none) bounds KV + other bytes together: what --device-memory leaves after the resident weights.
struct AdmissionLimits {
  int64_t kv_cap_bytes = 0;
  int64_t max_step_tokens = 0;
  int64_t memory_cap_bytes = 0;
};

class AdmissionLedger {
 public:
  explicit AdmissionLedger(AdmissionLimits limits);

  const AdmissionLimits& limits() const { return limits_; }
  // Why `demand` could never be admitted, even alone (empty if it fits an empty ledger).
  std::string never_fits(const std::vector<StepDemand>& demand) const;
  // Whether `demand`, starting at the next iteration, keeps every future iteration within the limits.
  bool fits(const std::vector<StepDemand>& demand) const;
  // Reserves the request's curve (it must fit). Ids are the caller's and unique among those in flight.
  void admit(int64_t id, const std::vector<StepDemand>& demand);
  // One iteration has run: every request in flight advanced one step; those whose last step it was leave.
  // Returns the ids that finished.
  std::vector<int64_t> advance();
  // A request leaves early (cancelled): its remaining steps are returned at once.
  void cancel(int64_t id);

  bool empty() const { return flights_.empty(); }
  bool contains(int64_t id) const { return flights_.count(id) != 0; }
  int64_t in_flight() const { return static_cast<int64_t>(flights_.size()); }
  // The reserved demand of future iteration t (t = 0: the next one): sums, and the largest decode_bytes.
  StepDemand reserved(int64_t t) const;
  // What iteration t may hold at its peak: KV + other bytes + the largest decode.
  int64_t reserved_memory(int64_t t) const;
  // KV pages the requests in flight take from the pool in the next iteration (their growth into their next
  // step), by page bytes.
  std::map<int64_t, int64_t> next_page_growth() const;
  int64_t horizon() const { return static_cast<int64_t>(total_.size()); }

 private:
  struct Flight {
    std::vector<StepDemand> demand;
    size_t next = 0;  // index of its next step
  };
  AdmissionLimits limits_;
  std::map<int64_t, Flight> flights_;
  std::deque<StepDemand> total_;  // total_[t]: the sum over flights of their demand at future iteration t
                                  // (decode_bytes: 0 here; reserved() takes the flights' largest)
};

// First come, first served over an AdmissionLedger: the head of the queue is admitted as soon as it fits
// and nobody behind it overtakes it (no starvation; a large request waits for room rather than being
// passed by every small one).
class FcfsAdmission {
 public:
  explicit FcfsAdmission(AdmissionLimits limits) : ledger_(limits) {}
  // Queues a request; throws, naming the limit, when it could never fit even alone.
  void submit(int64_t id, std::vector<StepDemand> demand);
  // Admits from the head of the queue while the head fits (at most `max`); returns the ids admitted, in order.
  std::vector<int64_t> admit_ready(int64_t max = std::numeric_limits<int64_t>::max());
  std::vector<int64_t> advance() { return ledger_.advance(); }
  // Removes a request, waiting or in flight.
  void cancel(int64_t id);
  int64_t waiting() const { return static_cast<int64_t>(queue_.size()); }
  const AdmissionLedger& ledger() const { return ledger_; }

 private:
  struct Waiting {
    int64_t id;
    std::vector<StepDemand> demand;
  };
  AdmissionLedger ledger_;
  std::deque<Waiting> queue_;
};

// The most requests in flight at once when `n` requests of one `demand` all arrive before the first iteration
// and FCFS admits them under `limits` with scale-level joins (what `bench serve --rate 0` measures and
// `scalekv plan --kv-memory` prints). Throws when one request could never fit, or (an internal error) when an
// iteration would reserve past the KV cap or a request would not run its steps back to back.
int64_t burst_concurrency(const std::vector<StepDemand>& demand, AdmissionLimits limits, int64_t n);

}  // namespace skv
