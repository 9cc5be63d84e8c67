// serve.h - `scalekv serve` on every rank of the job: world rank 0 runs the HTTP front end
// (server/frontend.h) beside its replica's engine; every rank runs its replica's engine loop on its main
// thread (model work never runs on an I/O thread). With several replicas (world size = tp x replicas)
// the other replicas' rank 0s take requests from world rank 0 over MPI (server/replica_link.h).
#pragma once

#include "engine/engine.h"
#include "server/frontend.h"

namespace skv {

// This rank's place in the job (launcher/context.h makes it): its TP group and the host communicator of
// that group (the same object on CPU); replicas are blocks of tp ranks of the world.
struct ServeTopology {
  Backend* backend = nullptr;
  Communicator* tp = nullptr;
  Communicator* control = nullptr;
  int world_rank = 0, replicas = 1;
};

// Call first thing (before loading the model): a drain signal (SIGTERM, SIGUSR1) that arrives before the
// server listens is remembered, and the server drains as soon as it starts, instead of the signal killing
// the rank mid-load.
void serve_hold_early_signals();

// Returns when the server has drained (SIGTERM) and every rank's engine has stopped; throws when an
// engine failed (after the front end has answered 503 to every pending request).
void run_serve(const ServeTopology& topo, EngineFamily& family, const ModelInfo& model, const ServeOptions& opt,
               const EngineOptions& engine_opt);

}  // namespace skv
