// metrics.h - the server's Prometheus metrics (GET /metrics), all named scalekv_*, kept in a
// prometheus-cpp registry (Debian's prometheus-cpp-dev: the exposition format, label escaping and
// histogram buckets come from a maintained library; we serve the text on our own HTTP server rather than
// prometheus-cpp-pull's, so /metrics shares the API's port, its api-key check and its I/O threads).
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace prometheus {
class Registry;
class Counter;
class Gauge;
class Histogram;
template <typename T>
class Family;
}  // namespace prometheus

namespace skv {

// What one replica reports (its rank 0's engine), refreshed before each scrape.
struct ReplicaGauges {
  int64_t running = 0, waiting = 0;
  int64_t kv_used = 0, kv_cached = 0, kv_reserved = 0, kv_capacity = 0, kv_peak = 0;
  int64_t memory_capacity = 0, memory_peak = 0;  // --device-memory's cap (0 without), all bytes at their peak
  int64_t images = 0;
  double comm_seconds = 0;
};

class ServerMetrics {
 public:
  explicit ServerMetrics(int replicas);
  ~ServerMetrics();
  void set_replica(int replica, const ReplicaGauges& g);
  // reason: queue_full, never_fits, invalid, draining, unavailable
  void rejected(const std::string& reason);
  void finished(double queue_s, double latency_s, int images);  // a request that completed
  void cancelled(const std::string& why);           // disconnect, shutdown
  void step(double seconds);                        // one engine iteration (one scale step of the batch)
  std::string text() const;                         // Prometheus text exposition format 0.0.4

 private:
  std::shared_ptr<prometheus::Registry> reg_;
  struct PerReplica {
    prometheus::Gauge *running, *waiting, *kv_used, *kv_cached, *kv_reserved, *kv_capacity, *kv_peak, *memory_capacity,
        *memory_peak, *images, *comm;
  };
  std::vector<PerReplica> replicas_;
  prometheus::Family<prometheus::Counter>* rejections_ = nullptr;
  prometheus::Family<prometheus::Counter>* cancels_ = nullptr;
  prometheus::Counter *completed_ = nullptr, *images_ = nullptr;
  prometheus::Histogram *queue_ = nullptr, *latency_ = nullptr, *step_ = nullptr;
};

}  // namespace skv
