// serve.cpp - see serve.h. Ranks: world rank 0 is the front end and rank 0 of replica 0; replica r's
// ranks are the block [r * tp, (r + 1) * tp) (launcher/context.h). Every rank runs its replica's engine
// loop on its main thread. With several replicas, world rank 0's hub thread and each other replica's
// agent thread talk over a MessageLink (parallel/message_link.h):
//   hub -> agent: SUBMIT (a request), CANCEL, CLOSE (drain done), ACK (of FAILED)
//   agent -> hub: RESULT (8-bit images), PREVIEW, STATS (gauges and step times, every 200 ms),
//                 REFUSED (its engine would not take a request), FAILED (its engine threw), BYE (stopped)
// A message is an 8-byte header length, a JSON header, and raw bytes (images) after it.
#include "server/serve.h"

#include <fmt/core.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "parallel/communicator.h"
#include "parallel/message_link.h"
#include "runtime/check.h"
#include "runtime/models/request_kv.h"  // now_seconds

namespace skv {

// A replica's gauges travel in its STATS messages (nlohmann's to_json/from_json, found by ADL in skv).
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(ReplicaGauges, running, waiting, kv_used, kv_cached, kv_reserved, kv_capacity,
                                   kv_peak, memory_capacity, memory_peak, images, comm_seconds)

namespace {

using json = nlohmann::json;

enum Tag : int { SUBMIT = 1, CANCEL, CLOSE, ACK, RESULT = 11, PREVIEW, STATS, REFUSED, FAILED, BYE };

std::string pack(const json& head, const std::string& bytes = {}) {
  const std::string h = head.dump();
  const uint64_t n = h.size();
  std::string out(sizeof n, '\0');
  std::memcpy(out.data(), &n, sizeof n);
  return out + h + bytes;
}

json unpack(const std::string& msg, std::string* bytes) {
  uint64_t n = 0;
  SKV_CHECK(msg.size() >= sizeof n, "internal: a link message of {} bytes", msg.size());
  std::memcpy(&n, msg.data(), sizeof n);
  SKV_CHECK(n <= msg.size() - sizeof n, "internal: a link message's header of {} bytes in {}", n, msg.size());
  if (bytes) *bytes = msg.substr(sizeof n + n);
  return json::parse(msg.begin() + sizeof n, msg.begin() + static_cast<std::ptrdiff_t>(sizeof n + n));
}

std::string join_rgb(const std::vector<std::vector<uint8_t>>& rgb) {
  std::string b;
  for (const auto& im : rgb) b.append(reinterpret_cast<const char*>(im.data()), im.size());
  return b;
}

std::vector<std::vector<uint8_t>> split_rgb(const std::string& b, int n, int w, int h) {
  const size_t px = static_cast<size_t>(w) * h * 3;
  SKV_CHECK(b.size() == px * static_cast<size_t>(n), "internal: {} bytes for {} images of {}x{}", b.size(), n, w, h);
  std::vector<std::vector<uint8_t>> out;
  for (int i = 0; i < n; ++i) out.emplace_back(b.begin() + static_cast<std::ptrdiff_t>(i * px), b.begin() + static_cast<std::ptrdiff_t>((i + 1) * px));
  return out;
}

ReplicaGauges engine_gauges(const Engine& e, int64_t images) {
  const EngineStats s = e.stats();
  ReplicaGauges g;
  g.running = e.in_flight();
  g.waiting = e.waiting();
  g.kv_used = s.kv_used_bytes;
  g.kv_cached = s.kv_cached_bytes;
  g.kv_reserved = e.kv_reserved_bytes();
  g.kv_capacity = s.kv_cap_bytes;
  g.kv_peak = s.kv_peak_bytes;
  g.memory_capacity = s.memory_cap_bytes;
  g.memory_peak = s.memory_peak_bytes;
  g.images = images;
  g.comm_seconds = s.comm_seconds;
  return g;
}

// A replica's engine in this process (world rank 0's own replica).
class LocalReplica final : public ReplicaHandle {
 public:
  explicit LocalReplica(Engine& e) : e_(e) {}
  void submit(const EngineRequest& r) override { e_.submit(r); }
  void cancel(int64_t id) override { e_.cancel(id); }
  void close() override { e_.close(); }
  std::string never_fits(const EngineRequest& r) const override { return e_.never_fits(r); }
  ReplicaGauges gauges() const override { return engine_gauges(e_, images); }
  std::atomic<int64_t> images{0};

 private:
  Engine& e_;
};

// A service thread that owns a MessageLink: other threads queue messages, the thread sends them and
// hands arrivals to on_message.
class LinkThread {
 public:
  LinkThread(std::unique_ptr<MessageLink> link, std::function<void(int, int, std::string&)> on_message,
             std::function<void()> on_tick = {})
      : link_(std::move(link)), on_message_(std::move(on_message)), on_tick_(std::move(on_tick)) {}
  // What the thread failed with (empty: nothing); set once, then the thread ends.
  std::string error() const {
    std::lock_guard<std::mutex> lk(mu_);
    return error_;
  }
  ~LinkThread() { stop(0); }
  void start() {
    thread_ = std::thread([this] {
      try {
        loop();
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lk(mu_);
        error_ = e.what();
      }
    });
  }
  void send(int dest, int tag, std::string bytes) {
    std::lock_guard<std::mutex> lk(mu_);
    out_.push_back({dest, tag, std::move(bytes)});
  }
  // Sends what is queued (waiting at most `grace_s` for the sends to complete), then ends the thread.
  void stop(double grace_s) {
    if (!thread_.joinable()) return;
    stop_at_ = now_seconds() + grace_s;
    stopping_ = true;
    thread_.join();
  }

 private:
  struct Out {
    int dest, tag;
    std::string bytes;
  };
  void loop() {
    double last_tick = 0;
    for (;;) {
      std::deque<Out> out;
      {
        std::lock_guard<std::mutex> lk(mu_);
        out.swap(out_);
      }
      for (auto& o : out) link_->send(o.dest, o.tag, std::move(o.bytes));
      bool any = false;
      int src = 0, tag = 0;
      std::string msg;
      while (link_->poll(&src, &tag, &msg)) {
        any = true;
        on_message_(src, tag, msg);
      }
      if (on_tick_ && now_seconds() - last_tick > 0.2) {
        on_tick_();
        last_tick = now_seconds();
      }
      if (stopping_) {
        bool queued;
        {
          std::lock_guard<std::mutex> lk(mu_);
          queued = !out_.empty();
        }
        if ((!queued && link_->pending_sends() == 0) || now_seconds() > stop_at_) return;
      }
      if (!any && out.empty()) std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
  }
  std::unique_ptr<MessageLink> link_;
  std::function<void(int, int, std::string&)> on_message_;
  std::function<void()> on_tick_;
  mutable std::mutex mu_;
  std::deque<Out> out_;
  std::string error_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<double> stop_at_{0};
};

// On world rank 0: another replica's engine, behind the link.
class RemoteReplica final : public ReplicaHandle {
 public:
  RemoteReplica(LinkThread& link, int leader, const Engine& local) : link_(link), leader_(leader), local_(local) {}
  void submit(const EngineRequest& r) override {
    ++sent_;
    link_.send(leader_, SUBMIT, pack(json::parse(engine_request_to_json(r))));
  }
  void cancel(int64_t id) override { link_.send(leader_, CANCEL, pack({{"id", id}})); }
  void close() override { link_.send(leader_, CLOSE, pack(json::object())); }
  // Replicas are alike (one model, one cap): world rank 0's engine answers for every one.
  std::string never_fits(const EngineRequest& r) const override { return local_.never_fits(r); }
  ReplicaGauges gauges() const override {
    std::lock_guard<std::mutex> lk(mu_);
    ReplicaGauges g = last_;
    g.waiting += std::max<int64_t>(0, sent_ - received_);  // on their way: queued as far as choosing goes
    return g;
  }
  void update(const ReplicaGauges& g, int64_t received) {
    std::lock_guard<std::mutex> lk(mu_);
    last_ = g;
    received_ = received;
  }

 private:
  LinkThread& link_;
  int leader_;
  const Engine& local_;
  mutable std::mutex mu_;
  ReplicaGauges last_;
  std::atomic<int64_t> sent_{0};
  int64_t received_ = 0;
};

// Test-only fault injection (tests/server/serve_http.sh, modes fail_rank0 and fail_replica; never set it
// outside tests): SKV_TEST_ENGINE_FAIL_AT_ITERATION=N makes this rank's engine loop throw once it has run
// N iterations (scale steps of its batch, counted from the engine's start, warm-up included: the tests
// use --no-warmup), on world rank SKV_TEST_ENGINE_FAIL_RANK=R only when that is set, else on every rank.
// The error takes the path of a real engine failure: 503 to every pending request, then a non-zero exit.
struct InjectedFailure {
  int64_t at_iteration = 0;  // 0: none here
};

InjectedFailure injected_failure(int world_rank) {
  auto number = [](const char* name, int64_t lo) -> std::optional<int64_t> {
    const char* v = std::getenv(name);
    if (!v || !*v) return std::nullopt;
    char* end = nullptr;
    errno = 0;
    const long long x = std::strtoll(v, &end, 10);
    SKV_CHECK(errno == 0 && *end == '\0' && x >= lo, "{}='{}' must be an integer >= {} (a test hook)", name, v, lo);
    return static_cast<int64_t>(x);
  };
  const std::optional<int64_t> at = number("SKV_TEST_ENGINE_FAIL_AT_ITERATION", 1);
  const std::optional<int64_t> rank = number("SKV_TEST_ENGINE_FAIL_RANK", 0);
  if (!at || (rank && *rank != world_rank)) return {};
  return {*at};
}

std::atomic<int> g_early_signal{0};
extern "C" void note_early_signal(int sig) { g_early_signal = sig; }

}  // namespace

void serve_hold_early_signals() {
  std::signal(SIGTERM, note_early_signal);
  std::signal(SIGUSR1, note_early_signal);
}

void run_serve(const ServeTopology& topo, EngineFamily& family, const ModelInfo& model, const ServeOptions& opt,
               const EngineOptions& engine_opt) {
  const int tp = topo.tp->size();
  const bool front = topo.world_rank == 0;
  const bool agent = !front && topo.tp->rank() == 0;  // rank 0 of another replica
  std::unique_ptr<MessageLink> link;
  if (topo.replicas > 1) link = MessageLink::make_world();  // collective: every rank, main thread
  if (!front) {
    // SIGTERM drains through world rank 0 (srun forwards it to every task): the others wait for its plans.
    std::signal(SIGTERM, SIG_IGN);
    std::signal(SIGUSR1, SIG_IGN);
  }

  EngineOptions eo = engine_opt;
  std::unique_ptr<Frontend> fe;
  std::unique_ptr<LinkThread> lt;
  int64_t last_iteration = 0;
  std::mutex steps_mu;
  std::vector<double> steps;  // an agent's step times since its last STATS
  std::atomic<int64_t> images{0};
  if (front) {
    eo.on_preview = [&](const EngineOptions::Preview& p) { fe->preview(0, p); };
    eo.on_progress = [&](const EngineProgress& p) {
      if (p.iteration > last_iteration) fe->step(0, p.step_seconds);
      last_iteration = p.iteration;
    };
  } else if (agent) {
    eo.on_preview = [&](const EngineOptions::Preview& p) {
      json h = {{"id", p.id}, {"scales_done", p.scales_done}, {"num_scales", p.num_scales}, {"width", p.width},
                {"height", p.height}, {"n", p.rgb.size()}};
      lt->send(0, PREVIEW, pack(h, join_rgb(p.rgb)));
    };
    eo.on_progress = [&](const EngineProgress& p) {
      if (p.iteration > last_iteration) {
        std::lock_guard<std::mutex> lk(steps_mu);
        steps.push_back(p.step_seconds);
      }
      last_iteration = p.iteration;
    };
  }
  if (const InjectedFailure f = injected_failure(topo.world_rank); f.at_iteration > 0) {
    eo.on_progress = [inner = eo.on_progress, f, rank = topo.world_rank](const EngineProgress& p) {
      if (inner) inner(p);
      SKV_CHECK(p.iteration < f.at_iteration, "injected engine failure at iteration {} on world rank {} "
                "(SKV_TEST_ENGINE_FAIL_AT_ITERATION: a test hook)", p.iteration, rank);
    };
  }
  Engine engine(family, *topo.backend, *topo.tp, *topo.control, eo);

  std::unique_ptr<LocalReplica> local;
  std::vector<std::unique_ptr<RemoteReplica>> remotes;
  std::atomic<int> byes{0};
  std::atomic<int64_t> submitted{0};  // an agent: requests the front end sent it
  std::atomic<bool> acked{false};     // an agent: the front end heard of its failure
  std::mutex failure_mu;
  std::string replica_failure;        // world rank 0: a replica that failed
  // On any exit, the link thread stops before the objects its callbacks use (declared above) go.
  struct StopLink {
    std::unique_ptr<LinkThread>& lt;
    ~StopLink() {
      if (lt) lt->stop(0);
    }
  } stop_link{lt};
  if (front) {
    local = std::make_unique<LocalReplica>(engine);
    std::vector<ReplicaHandle*> handles{local.get()};
    if (link) {
      lt = std::make_unique<LinkThread>(std::move(link), [&](int src, int tag, std::string& msg) {
        const int r = src / tp;
        if (r < 1 || r >= topo.replicas) return;
        std::string bytes;
        const json h = unpack(msg, &bytes);
        switch (tag) {
          case RESULT: {
            EngineResult res;
            res.id = h.at("id");
            res.cancelled = h.at("cancelled");
            res.width = h.at("width");
            res.height = h.at("height");
            res.rgb = split_rgb(bytes, h.at("n"), res.width, res.height);
            res.gen.kv_peak_bytes = h.at("kv_peak_bytes");
            res.gen.kv_planned_peak_bytes = h.at("kv_planned_peak_bytes");
            res.steps_in_batch_max = h.at("max_batch");
            res.finished = now_seconds();  // the replica's clock is not ours: durations travel
            res.admitted = res.finished - h.at("run_seconds").get<double>();
            fe->deliver(r, std::move(res));
            break;
          }
          case PREVIEW: {
            EngineOptions::Preview p;
            p.id = h.at("id");
            p.scales_done = h.at("scales_done");
            p.num_scales = h.at("num_scales");
            p.width = h.at("width");
            p.height = h.at("height");
            p.rgb = split_rgb(bytes, h.at("n"), p.width, p.height);
            fe->preview(r, p);
            break;
          }
          case STATS:
            remotes[static_cast<size_t>(r - 1)]->update(h.at("gauges").get<ReplicaGauges>(), h.at("submitted"));
            for (double s : h.at("steps")) fe->step(r, s);
            break;
          case REFUSED: fe->refused(r, h.at("id"), h.at("why")); break;
          case FAILED: {
            const std::string why = fmt::format("replica {} (rank {}) failed: {}", r, src, h.at("why").get<std::string>());
            {
              std::lock_guard<std::mutex> lk(failure_mu);
              replica_failure = why;
            }
            fe->fail(why);
            std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the 503s go out first
            lt->send(src, ACK, pack(json::object()));
            ++byes;  // it will not say BYE
            break;
          }
          case BYE: ++byes; break;
          default: break;
        }
      });
      for (int r = 1; r < topo.replicas; ++r) {
        remotes.push_back(std::make_unique<RemoteReplica>(*lt, r * tp, engine));
        handles.push_back(remotes.back().get());
      }
    }
    fe = std::make_unique<Frontend>(opt, model, handles);
    if (lt) lt->start();
    fe->start();
    if (const int sig = g_early_signal.load())
      fe->drain(fmt::format("{} before the server listened", sig == SIGTERM ? "SIGTERM" : "SIGUSR1"));
    const EngineStats es = engine.stats();  // the caps as the engine derived them (--device-memory)
    const std::string device = es.device_memory_bytes > 0 ? ", " + device_memory_text(es) : "";
    fmt::print("scalekv serve: {} on http://{}:{}/ ({} replica(s) of TP {}, KV cap {} bytes each{}, {} {}); SIGTERM "
               "drains\n", model.id, opt.host, fe->port(), topo.replicas, tp, es.kv_cap_bytes, device, opt.kv.policy,
               opt.kv.policy == "full" ? "" : (opt.kv.budget.empty() ? "10%" : opt.kv.budget));
    std::fflush(stdout);
  } else if (agent) {
    lt = std::make_unique<LinkThread>(
        std::move(link),
        [&](int src, int tag, std::string& msg) {
          if (src != 0) return;
          const json h = unpack(msg, nullptr);
          switch (tag) {
            case SUBMIT: {
              EngineRequest r = engine_request_from_json(h.dump());
              ++submitted;
              try {
                engine.submit(r);
              } catch (const std::exception& e) {
                const auto* err = dynamic_cast<const Error*>(&e);
                lt->send(0, REFUSED, pack({{"id", r.id}, {"why", err ? err->message() : e.what()}}));
              }
              break;
            }
            case CANCEL: engine.cancel(h.at("id")); break;
            case CLOSE: engine.close(); break;
            case ACK: acked = true; break;
            default: break;
          }
        },
        [&] {
          std::vector<double> s;
          {
            std::lock_guard<std::mutex> lk(steps_mu);
            s.swap(steps);
          }
          lt->send(0, STATS, pack({{"gauges", engine_gauges(engine, images)}, {"submitted", submitted.load()},
                                   {"steps", s}}));
        });
    lt->start();
    try {
      engine.run([&](EngineResult&& r) {
        if (!r.cancelled && r.id > 0) images += static_cast<int64_t>(r.rgb.size());  // warm-ups (ids < 0) aside
        json h = {{"id", r.id}, {"cancelled", r.cancelled}, {"width", r.width}, {"height", r.height},
                  {"n", r.rgb.size()}, {"kv_peak_bytes", r.gen.kv_peak_bytes},
                  {"kv_planned_peak_bytes", r.gen.kv_planned_peak_bytes}, {"max_batch", r.steps_in_batch_max},
                  {"run_seconds", r.finished - r.admitted}};
        lt->send(0, RESULT, pack(h, join_rgb(r.rgb)));
      });
    } catch (const std::exception& e) {
      // Tell the front end (it answers 503 to what is pending), give it a moment, then fail the job.
      lt->send(0, FAILED, pack({{"why", e.what()}}));
      for (int i = 0; i < 300 && !acked; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      throw;
    }
    lt->send(0, BYE, pack(json::object()));
    lt->stop(30);
    return;
  }

  if (!front) {  // the other ranks of a replica: its engine loop only
    engine.run([](EngineResult&&) {});
    return;
  }
  try {
    engine.run([&](EngineResult&& r) {
      if (!r.cancelled && r.id > 0) local->images += static_cast<int64_t>(r.rgb.size());  // warm-ups aside
      fe->deliver(0, std::move(r));
    });
  } catch (const std::exception& e) {
    fe->fail(e.what());
    fe->stop();
    throw;
  }
  // Every other replica stops once closed (the front end closes them all when the drain is done).
  const double until = now_seconds() + opt.drain_timeout_s + 60;
  while (byes < topo.replicas - 1 && now_seconds() < until && (!lt || lt->error().empty())) {
    collective_keepalive();  // the other ranks may be in the end-of-job barrier already
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (lt) lt->stop(5);
  fe->stop();
  fe.reset();
  std::signal(SIGTERM, SIG_IGN);  // the signal set restored the defaults: a late signal must not kill the rank
  std::signal(SIGUSR1, SIG_IGN);
  {
    std::lock_guard<std::mutex> lk(failure_mu);
    SKV_CHECK(replica_failure.empty(), "{}", replica_failure);
  }
  SKV_CHECK(!lt || lt->error().empty(), "the link to the replicas failed: {}", lt ? lt->error() : "");
  SKV_CHECK(byes >= topo.replicas - 1, "{} of {} replicas did not stop within {} s of the drain",
            topo.replicas - 1 - byes, topo.replicas - 1, opt.drain_timeout_s + 60);
  fmt::print("scalekv serve: drained and stopped\n");
}

}  // namespace skv
