// engine.h - the engine: scale-level continuous batching of image requests into one KV memory cap.
// One iteration is one scale step of every request in flight, packed into one forward pass (each request
// at its own scale, with its own KV policy and cache: Generation::step of its family). Requests join at
// any iteration boundary and leave when their last scale is decoded. A request is admitted only when its
// whole KV curve (engine/admission.h, from its policy's memory plan) fits beside the curves of those in
// flight at every future iteration, so the measured KV peak never passes the cap and nothing is ever
// preempted. Modes: sequential (one request at a time), static (a batch starts only when the previous
// one has finished: request-level batching) and continuous (scale-level joins; the default).
//
// Tensor parallel: every rank of the group calls run(); rank 0 owns the queue and decides each
// iteration's plan (admit, cancel, stop), broadcast over the control communicator (the host group under
// NCCL), so every rank executes the same step on its head slice. Idle ranks hear a plan at least once a
// second, so an idle engine never trips the collective watchdog. Each rank decodes a share of a finished
// request's images (a one-image request: round-robin over the ranks) and broadcasts it as 8-bit RGB, so
// every rank's result has every image and no rank decodes a large batch alone.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/admission.h"
#include "engine/request_memory.h"
#include "kvcache/page_pool.h"
#include "kvcache/policy_factory.h"
#include "runtime/models/generation.h"

namespace skv {

class Communicator;

// A request as the engine's clients give it (and rank 0 broadcasts it). Family-specific fields are
// ignored by the other family.
struct EngineRequest {
  int64_t id = 0;                   // the client's, unique among requests not yet finished
  std::vector<int64_t> labels;      // VAR: the class of each image
  std::vector<int64_t> prompts;     // Infinity: the index of each image's prompt in the family's text table
  std::vector<std::string> texts;   // Infinity: or each image's prompt as text (the family's resident encoder)
  double h_div_w = 0;               // Infinity: aspect ratio h/w from the dynamic-resolution table (0: the family's)
  std::vector<uint32_t> image_ids;  // per image RNG stream (empty: 0..n-1)
  uint64_t seed = 0;
  double cfg = -1;                  // < 0: the model's
  int top_k = -1;                   // < 0: the model's
  double top_p = -1;                // < 0: the model's
  KVOptions kv;                     // this request's KV policy and budget
  bool previews = false;            // decode the accumulated map after every scale but the last (on_preview)
  int images() const {
    return static_cast<int>(!labels.empty() ? labels.size() : !prompts.empty() ? prompts.size() : texts.size());
  }
};
std::string engine_request_to_json(const EngineRequest& r);
EngineRequest engine_request_from_json(const std::string& s);

// What a model family gives the engine (engine/var_family.h, engine/infinity_family.h).
class EngineFamily {
 public:
  virtual ~EngineFamily() = default;
  virtual std::string name() const = 0;
  // Throws (naming the field) when the request is not valid for this model.
  virtual void check(const EngineRequest& r) const = 0;
  virtual std::unique_ptr<KVPolicy> make_policy(const EngineRequest& r) const = 0;
  // The KV the request holds on this rank during each of its scale steps (what its cache allocates).
  virtual std::vector<StepDemand> demand(const EngineRequest& r, const KVPolicy& policy) const = 0;
  // Starts the generation, its KV cache taking its pages from `pages` (the engine's pool);
  // this rank decodes images [decode_begin, decode_end).
  virtual std::unique_ptr<Generation> start(const EngineRequest& r, KVPolicy* policy, KVPagePool& pages,
                                            int decode_begin, int decode_end) = 0;
  // The next scale of every generation in `batch` (all started by this family) as one pass.
  virtual void step(const std::vector<Generation*>& batch) = 0;
  // Decoded images [B, 3, H, W] as 8-bit RGB, H x W x 3 each (the family's rounding).
  virtual std::vector<std::vector<uint8_t>> rgb8(const Tensor& images) const = 0;
  // The latent cells of `r`'s final map (what its decoder's work scales with).
  virtual int64_t image_cells(const EngineRequest& r) const = 0;
  // Decodes one image of the family's default size on this rank: what the allocator peaks at above what it held
  // (engine/request_memory.h). Any rank, alone (no collective).
  virtual DecodeProbe probe_decode() = 0;
};

enum class BatchMode { Sequential, Static, Continuous };
BatchMode parse_batch_mode(const std::string& s, const std::string& option);  // one-line error naming option
const char* batch_mode_name(BatchMode m);

// After every iteration, on every rank: where the engine stands (progress lines).
struct EngineProgress {
  int64_t iteration = 0, in_flight = 0, finished = 0;
  double step_seconds = 0;
  int64_t first_id = -1;  // the oldest request in flight (-1: none) and its scales
  int first_scales_done = 0, first_num_scales = 0;
};

struct EngineOptions {
  AdmissionLimits limits;  // --kv-memory, --max-step-tokens (limits.memory_cap_bytes: from device_memory_bytes)
  // --device-memory: the bytes of one device (or host) per rank. The engine measures what is resident when it
  // starts (weights, encoders: the allocator's bytes in use, the largest over the group's ranks) and its
  // decoder (one image), and admits requests into what is left: limits.memory_cap_bytes = device memory -
  // resident, counting every request's KV and its memory outside the cache (StepDemand::other_bytes).
  // limits.kv_cap_bytes 0 then means "no separate KV cap". 0: no device budget.
  int64_t device_memory_bytes = 0;
  BatchMode mode = BatchMode::Continuous;
  int64_t max_in_flight = 0;       // at most this many requests in flight (0: no bound; generate --batch)
  // Every rank decodes every image and keeps the float images in EngineResult::gen.images (verify-golden
  // compares them on each rank); otherwise each rank decodes a share and only the 8-bit images travel.
  bool decode_everywhere = false;
  double idle_plan_seconds = 1.0;  // an idle rank 0 still broadcasts a plan this often
  // Rank 0, on the loop thread, at every iteration boundary before the plan is decided (it may submit:
  // arrivals replayed by iteration in tests). The argument counts the iterations run so far.
  std::function<void(int64_t iterations)> on_boundary;
  std::function<void(const EngineProgress&)> on_progress;
  // Rank 0 of the group, on the loop thread, after each scale step but the last of a request that asked for
  // previews: its images decoded from the map accumulated so far, 8-bit RGB. The other ranks go on to the
  // next plan meanwhile (they wait for rank 0 in its broadcast).
  struct Preview {
    int64_t id = 0;
    int scales_done = 0, num_scales = 0;
    int width = 0, height = 0;
    std::vector<std::vector<uint8_t>> rgb;
  };
  std::function<void(const Preview&)> on_preview;
};

struct EngineResult {
  int64_t id = 0;
  GenerateResult gen;                       // tokens, timings, KV bytes (images: see rgb)
  std::vector<std::vector<uint8_t>> rgb;    // 8-bit RGB per image, height x width x 3
  int width = 0, height = 0;
  double submitted = 0, admitted = 0, finished = 0;  // rank 0's engine clock (now_seconds)
  int64_t steps_in_batch_max = 0;           // the most requests it shared a step with (itself included)
  bool cancelled = false;
};

struct EngineStats {
  int64_t submitted = 0, admitted = 0, finished = 0, cancelled = 0, iterations = 0;
  int64_t max_in_flight = 0;
  int64_t kv_peak_bytes = 0;  // measured by the allocator (KV category) since the engine started
  int64_t kv_planned_peak_bytes = 0;  // rank 0: the largest KV reservation of one iteration (the plans' peak)
  int64_t kv_cap_bytes = 0;
  // --device-memory (0 when not given): the device bytes, what was resident at start (largest over the group),
  // the cap requests are admitted into, and the allocator's measured peak of all bytes (this rank) since then.
  int64_t device_memory_bytes = 0, resident_bytes = 0, memory_cap_bytes = 0, memory_peak_bytes = 0;
  int64_t memory_planned_peak_bytes = 0;  // rank 0: the largest KV + other reservation of one iteration
  double step_seconds = 0;    // in forward steps
  // After the last iteration (this rank): the allocator's KV bytes the requests hold, and the free pages the
  // page pool keeps for the next requests (the rest of the allocator's KV bytes).
  int64_t kv_used_bytes = 0, kv_cached_bytes = 0;
  // The KV page pool (this rank): pages taken from the backend since the engine started (a page a finished
  // request gave back and the next one took is counted once) and the most bytes it held at once.
  int64_t kv_pages_allocated = 0, kv_pool_peak_bytes = 0;
  double comm_seconds = 0;    // seconds in the group's collectives since the engine started (this rank)
};
// "device memory D: R resident, requests admitted into C" (empty without --device-memory): how the engine
// derived its cap, for the clients' lines (generate, bench serve, serve).
std::string device_memory_text(const EngineStats& s);

class Engine {
 public:
  // One request through an engine of its own (no KV cap), on every rank of the group; its result on every
  // rank. verify-golden runs this way, so the goldens check the engine's own path.
  static EngineResult run_one(EngineFamily& family, Backend& backend, Communicator& group, Communicator& control,
                              EngineRequest r, bool decode_everywhere = true);

  // `group`: the tensor-parallel group the model runs on; `control`: the host communicator of the same
  // ranks that carries the plans (the same object on CPU). Resets the allocator's peaks.
  Engine(EngineFamily& family, Backend& backend, Communicator& group, Communicator& control, EngineOptions opt);
  ~Engine();

  // Rank 0, any thread. Throws (the request is not taken) when it is not valid, its id is queued or in
  // flight, or it could never fit the limits even alone; the message names the limit.
  void submit(EngineRequest r);
  // Why `r` could never run under this engine's limits, even alone (empty: it can). Any rank, any thread;
  // clients call it first to name their own option (--kv-memory) in the error.
  std::string never_fits(const EngineRequest& r) const;
  // Rank 0, any thread: a waiting request leaves the queue (no on_done for it); one in flight stops at the
  // next boundary, returns its KV at once and is reported cancelled. Unknown ids are ignored (it may have
  // finished already).
  void cancel(int64_t id);
  // Rank 0, any thread: no more submissions; run() returns once every request has finished.
  void close();

  // Every rank of the group: runs iterations until closed and drained. `on_done` is called on every
  // rank, on this thread, for each finished or cancelled request.
  void run(const std::function<void(EngineResult&&)>& on_done);

  // Rank 0, any thread.
  EngineStats stats() const;
  int64_t waiting() const;
  int64_t in_flight() const;
  // The KV bytes the requests in flight have reserved for the next iteration.
  int64_t kv_reserved_bytes() const;

 private:
  struct Flight;
  struct Plan;
  Plan decide();                    // rank 0
  void apply(const Plan& plan, const std::function<void(EngineResult&&)>& on_done);
  void step(const std::function<void(EngineResult&&)>& on_done);
  void broadcast_plan(Plan& plan);
  void gather_images(const Flight& f, EngineResult& r);  // every rank: the request's 8-bit images
  double comm_seconds() const;  // this rank's seconds in collectives so far
  std::vector<StepDemand> demand(const EngineRequest& r) const;  // the family's curve + its decode

  EngineFamily& family_;
  Backend& be_;
  Communicator& group_;
  Communicator& control_;
  DecodeProbe decode_probe_;  // --device-memory only (measured before the resident bytes)
  int64_t resident_bytes_ = 0;  // --device-memory: the largest bytes in use over the group's ranks at start
  EngineOptions opt_;
  int64_t kv_before_ = 0;
  double comm_before_ = 0;
  // This rank's KV page pool, shared by every request in flight (declared before flights_: their caches give
  // their pages back to it when they go).
  KVPagePool pages_;

  mutable std::mutex mu_;  // guards everything below that rank 0's clients touch
  std::condition_variable cv_;
  struct Queued {
    EngineRequest req;
    double submitted = 0;
  };
  std::vector<int64_t> cancels_;      // asked, not yet applied
  bool closed_ = false;
  FcfsAdmission admission_;           // rank 0's queue and ledger
  std::map<int64_t, Queued> waiting_; // rank 0: queued requests by id (FCFS order is admission_'s)
  EngineStats stats_;

  std::vector<std::unique_ptr<Flight>> flights_;  // in admission order (the loop thread only)
  int64_t admissions_ = 0;  // a request's first decode share goes to rank (admission number % group size)
  double last_step_seconds_ = 0;
};

}  // namespace skv
