// frontend.h - the HTTP front end on world rank 0: routes, the api-key check, the bounded queue (429),
// one job per POST /v1/images/generations sent to a replica's engine, answers (JSON or Server-Sent Events
// with a preview per scale), cancellation when the client goes away, /metrics, readiness and the drain on
// SIGTERM. It never runs model work: the engines run on their ranks' main threads and hand results back
// through deliver() / preview() / step(); PNG encoding runs on the I/O threads.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "server/api.h"
#include "server/http_server.h"
#include "server/metrics.h"

namespace skv {

struct ServeOptions {
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string port_file;  // written (atomically) with the bound port once listening: tests use --port 0
  int io_threads = 2;
  std::string api_key;    // empty: no authentication
  double drain_timeout_s = 30;
  int max_queue = 64;     // requests waiting for admission, over every replica; more get 429
  bool warmup = true;     // /ready waits for one request through the engine
  HttpLimits http;
  ApiLimits api;
  KVOptions kv;           // the server's default KV policy and budget
};

// One replica's engine as the front end sees it: in this process (LocalReplica) or behind the MPI link.
class ReplicaHandle {
 public:
  virtual ~ReplicaHandle() = default;
  virtual void submit(const EngineRequest& r) = 0;  // throws when it cannot take it
  virtual void cancel(int64_t id) = 0;
  virtual void close() = 0;
  virtual ReplicaGauges gauges() const = 0;
  // Why `r` could never run on this replica (empty: it can).
  virtual std::string never_fits(const EngineRequest& r) const = 0;
};

class Frontend {
 public:
  Frontend(ServeOptions opt, ModelInfo model, std::vector<ReplicaHandle*> replicas);
  ~Frontend();
  // Listens, installs the signal handlers, writes the port file, submits the warm-up request.
  void start();
  // From the engines' threads: a request finished (or was cancelled), a preview, one iteration's time.
  void deliver(int replica, EngineResult&& r);
  void preview(int replica, const EngineOptions::Preview& p);
  void step(int replica, double seconds);
  // A replica refused a request it was sent (its engine was closing): the client gets 503.
  void refused(int replica, int64_t id, const std::string& why);
  // SIGTERM: stop listening, answer 503 to new requests, let in-flight ones finish (drain timeout), then
  // close every replica's engine (their run() returns).
  void drain(const std::string& why);
  // An engine failed: every pending and new request gets 503, engines are closed.
  void fail(const std::string& why);
  // After every engine has stopped: stops the HTTP server.
  void stop();
  int port() const;

 private:
  struct Job;
  void handle(const HttpRequest& req, std::shared_ptr<HttpExchange> ex);
  void generate(const HttpRequest& req, std::shared_ptr<HttpExchange> ex);
  void finish_job(std::shared_ptr<Job> job, EngineResult&& r);
  void cancel_job(int64_t id, const std::string& cause);
  void maybe_close_engines();
  void answer_error(const Job& job, const std::string& message);  // 503, or an error event on a stream  // draining and nothing left: close them (once)
  int pick_replica(const std::vector<ReplicaGauges>& gauges);
  nlohmann::json scalekv_fields(const Job& job, const EngineResult& r) const;  // the answer's scalekv object
  std::shared_ptr<Job> take_job(int64_t id);  // removes and returns it (null: answered already)
  EngineRequest warmup_request(int replica) const;

  ServeOptions opt_;
  ModelInfo model_;
  std::vector<ReplicaHandle*> replicas_;
  ServerMetrics metrics_;
  std::unique_ptr<HttpServer> http_;

  mutable std::mutex mu_;
  std::condition_variable cv_;  // a job left; the state changed
  std::thread drain_thread_;
  std::map<int64_t, std::shared_ptr<Job>> jobs_;  // answered jobs leave
  int64_t next_id_ = 1;
  enum class State { Serving, Draining, Failed } state_ = State::Serving;
  std::string failure_;
  bool engines_closed_ = false;
  double mean_latency_ = 1.0;  // for Retry-After
  int warmups_left_ = 0;
  std::atomic<int64_t> answers_in_progress_{0};  // results being encoded and written
  std::atomic<bool> ready_{false};
};

}  // namespace skv
