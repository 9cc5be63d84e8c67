// metrics.cpp - see metrics.h.
#include "server/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

namespace skv {

namespace {

prometheus::Family<prometheus::Gauge>& gauge(prometheus::Registry& r, const std::string& name, const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r);
}

}  // namespace

ServerMetrics::ServerMetrics(int replicas) : reg_(std::make_shared<prometheus::Registry>()) {
  auto& r = *reg_;
  auto& running = gauge(r, "scalekv_requests_running", "Requests in flight in the engine (admitted, not finished)");
  auto& waiting = gauge(r, "scalekv_requests_waiting", "Requests queued for admission");
  auto& used = gauge(r, "scalekv_kv_bytes_used", "KV cache bytes the requests in flight hold now (the allocator's KV "
                                                 "category less the cached pages, rank 0)");
  auto& cached = gauge(r, "scalekv_kv_bytes_cached", "Free KV pages the page pool keeps for the next requests, within "
                                                     "the cap (rank 0)");
  auto& reserved = gauge(r, "scalekv_kv_bytes_reserved", "KV bytes the requests in flight reserve for the next step");
  auto& cap = gauge(r, "scalekv_kv_bytes_capacity", "The KV cap requests are admitted into (--kv-memory, or what --device-memory leaves)");
  auto& peak = gauge(r, "scalekv_kv_bytes_peak", "The largest KV bytes allocated at once since start (measured)");
  auto& mcap = gauge(r, "scalekv_memory_bytes_capacity", "What --device-memory leaves after the resident model for "
                                                         "requests' KV, activations and decode (0: no --device-memory)");
  auto& mpeak = gauge(r, "scalekv_memory_bytes_peak", "The largest bytes allocated at once since start, every "
                                                      "category (measured, rank 0 of the replica)");
  auto& images = gauge(r, "scalekv_replica_images", "Images this replica has finished");
  auto& comm = gauge(r, "scalekv_tp_comm_seconds", "Seconds rank 0 of the replica spent in tensor-parallel collectives");
  for (int i = 0; i < replicas; ++i) {
    const prometheus::Labels l{{"replica", std::to_string(i)}};
    replicas_.push_back({&running.Add(l), &waiting.Add(l), &used.Add(l), &cached.Add(l), &reserved.Add(l), &cap.Add(l),
                         &peak.Add(l),
                         &mcap.Add(l), &mpeak.Add(l), &images.Add(l), &comm.Add(l)});
  }
  rejections_ = &prometheus::BuildCounter().Name("scalekv_admission_rejections_total")
                     .Help("Requests refused before admission, by reason").Register(r);
  for (const char* why : {"queue_full", "never_fits", "invalid", "draining", "unavailable"}) rejections_->Add({{"reason", why}});
  cancels_ = &prometheus::BuildCounter().Name("scalekv_requests_cancelled_total")
                  .Help("Requests cancelled before they finished, by cause").Register(r);
  for (const char* why : {"disconnect", "shutdown"}) cancels_->Add({{"cause", why}});
  completed_ = &prometheus::BuildCounter().Name("scalekv_requests_completed_total").Help("Requests answered with images")
                    .Register(r).Add({});
  const prometheus::Histogram::BucketBoundaries secs{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250};
  queue_ = &prometheus::BuildHistogram().Name("scalekv_queue_seconds").Help("Time from arrival to admission")
                .Register(r).Add({}, secs);
  latency_ = &prometheus::BuildHistogram().Name("scalekv_request_seconds").Help("Time from arrival to the final image")
                  .Register(r).Add({}, secs);
  step_ = &prometheus::BuildHistogram().Name("scalekv_step_seconds")
               .Help("One engine iteration: one scale step of every request in flight (replica 0)")
               .Register(r).Add({}, prometheus::Histogram::BucketBoundaries{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                                           0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10});
  images_ = &prometheus::BuildCounter().Name("scalekv_images_total").Help("Images generated and returned")
                 .Register(r).Add({});
}

ServerMetrics::~ServerMetrics() = default;

void ServerMetrics::set_replica(int i, const ReplicaGauges& g) {
  if (i < 0 || i >= static_cast<int>(replicas_.size())) return;
  const PerReplica& p = replicas_[static_cast<size_t>(i)];
  p.running->Set(static_cast<double>(g.running));
  p.waiting->Set(static_cast<double>(g.waiting));
  p.kv_used->Set(static_cast<double>(g.kv_used));
  p.kv_cached->Set(static_cast<double>(g.kv_cached));
  p.kv_reserved->Set(static_cast<double>(g.kv_reserved));
  p.kv_capacity->Set(static_cast<double>(g.kv_capacity));
  p.kv_peak->Set(static_cast<double>(g.kv_peak));
  p.memory_capacity->Set(static_cast<double>(g.memory_capacity));
  p.memory_peak->Set(static_cast<double>(g.memory_peak));
  p.images->Set(static_cast<double>(g.images));
  p.comm->Set(g.comm_seconds);
}

void ServerMetrics::rejected(const std::string& reason) { rejections_->Add({{"reason", reason}}).Increment(); }
void ServerMetrics::cancelled(const std::string& why) { cancels_->Add({{"cause", why}}).Increment(); }
void ServerMetrics::finished(double queue_s, double latency_s, int images) {
  completed_->Increment();
  images_->Increment(images);
  queue_->Observe(queue_s);
  latency_->Observe(latency_s);
}
void ServerMetrics::step(double seconds) { step_->Observe(seconds); }

std::string ServerMetrics::text() const { return prometheus::TextSerializer().Serialize(reg_->Collect()); }

}  // namespace skv
