// serve.cpp - see serve.h.
#include "server/serve.h"

#include <fmt/core.h>

#include <atomic>
#include <csignal>

#include "parallel/communicator.h"
#include "runtime/check.h"

namespace skv {

namespace {

// A replica's engine in this process.
class LocalReplica final : public ReplicaHandle {
 public:
  explicit LocalReplica(Engine& e) : e_(e) {}
  void submit(const EngineRequest& r) override { e_.submit(r); }
  void cancel(int64_t id) override { e_.cancel(id); }
  void close() override { e_.close(); }
  std::string never_fits(const EngineRequest& r) const override { return e_.never_fits(r); }
  ReplicaGauges gauges() const override {
    const EngineStats s = e_.stats();
    ReplicaGauges g;
    g.running = e_.in_flight();
    g.waiting = e_.waiting();
    g.kv_used = s.kv_used_bytes;
    g.kv_reserved = e_.kv_reserved_bytes();
    g.kv_capacity = s.kv_cap_bytes;
    g.kv_peak = s.kv_peak_bytes;
    g.images = images;
    g.comm_seconds = s.comm_seconds;
    return g;
  }
  std::atomic<int64_t> images{0};

 private:
  Engine& e_;
};

}  // namespace

void run_serve(const ServeTopology& topo, EngineFamily& family, const ModelInfo& model, const ServeOptions& opt,
               const EngineOptions& engine_opt) {
  SKV_CHECK(topo.replicas == 1, "serve with {} replicas: not supported yet", topo.replicas);
  const bool front = topo.world_rank == 0;
  EngineOptions eo = engine_opt;
  std::unique_ptr<Frontend> fe;
  std::unique_ptr<LocalReplica> local;
  int64_t last_iteration = 0;
  if (front) {
    eo.on_preview = [&](const EngineOptions::Preview& p) { fe->preview(topo.replica, p); };
    eo.on_progress = [&](const EngineProgress& p) {
      if (p.iteration > last_iteration) fe->step(topo.replica, p.step_seconds);
      last_iteration = p.iteration;
    };
  } else {
    // SIGTERM drains through world rank 0 (srun forwards it to every task): the others wait for its plan.
    std::signal(SIGTERM, SIG_IGN);
    std::signal(SIGUSR1, SIG_IGN);
  }
  Engine engine(family, *topo.backend, *topo.tp, *topo.control, eo);
  if (front) {
    local = std::make_unique<LocalReplica>(engine);
    fe = std::make_unique<Frontend>(opt, model, std::vector<ReplicaHandle*>{local.get()});
    fe->start();
    fmt::print("scalekv serve: {} on http://{}:{}/ (TP {}, KV cap {} bytes, {} {}); SIGTERM drains\n", model.id,
               opt.host, fe->port(), topo.tp->size(), eo.limits.kv_cap_bytes, opt.kv.policy,
               opt.kv.policy == "full" ? "" : (opt.kv.budget.empty() ? "10%" : opt.kv.budget));
    std::fflush(stdout);
  }
  try {
    engine.run([&](EngineResult&& r) {
      if (!front) return;
      if (!r.cancelled) local->images += static_cast<int64_t>(r.rgb.size());
      fe->deliver(topo.replica, std::move(r));
    });
  } catch (const std::exception& e) {
    if (fe) {
      fe->fail(e.what());
      fe->stop();
    }
    throw;
  }
  if (fe) {
    fe->stop();
    fmt::print("scalekv serve: drained and stopped\n");
  }
}

}  // namespace skv
