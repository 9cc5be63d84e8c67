#include "parallel/topology.h"

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "runtime/check.h"

namespace skv {

namespace {

// An integer variable, or `fallback` when unset; a malformed value throws naming it.
int env_int(const EnvLookup& env, const char* name, int fallback) {
  const char* v = env(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  SKV_CHECK(end && *end == '\0' && x >= 0 && x < (1L << 30), "environment variable {}='{}' is not a rank or size", name,
            v);
  return static_cast<int>(x);
}

bool has(const EnvLookup& env, const char* name) {
  const char* v = env(name);
  return v && *v;
}

}  // namespace

Topology topology_from_env(const EnvLookup& env) {
  Topology t;
  if (has(env, "OMPI_COMM_WORLD_RANK")) {
    t.source = "OMPI";
    t.world_rank = env_int(env, "OMPI_COMM_WORLD_RANK", 0);
    t.world_size = env_int(env, "OMPI_COMM_WORLD_SIZE", 1);
    t.local_rank = env_int(env, "OMPI_COMM_WORLD_LOCAL_RANK", 0);
    t.local_size = env_int(env, "OMPI_COMM_WORLD_LOCAL_SIZE", 0);
  } else if (has(env, "PMIX_RANK")) {  // srun --mpi=pmix (Slurm's variables give size and local rank)
    t.source = "PMIX";
    t.world_rank = env_int(env, "PMIX_RANK", 0);
    t.world_size = env_int(env, "SLURM_STEP_NUM_TASKS", env_int(env, "SLURM_NTASKS", 0));
    t.local_rank = env_int(env, "SLURM_LOCALID", env_int(env, "MPI_LOCALRANKID", 0));
    t.local_size = env_int(env, "MPI_LOCALNRANKS", 0);
  } else if (has(env, "PMI_RANK")) {  // MPICH Hydra, srun --mpi=pmi2
    t.source = "PMI";
    t.world_rank = env_int(env, "PMI_RANK", 0);
    t.world_size = env_int(env, "PMI_SIZE", env_int(env, "SLURM_STEP_NUM_TASKS", 0));
    t.local_rank = env_int(env, "MPI_LOCALRANKID", env_int(env, "SLURM_LOCALID", 0));
    t.local_size = env_int(env, "MPI_LOCALNRANKS", 0);
  } else if (has(env, "SLURM_PROCID") && has(env, "SLURM_STEP_ID") && has(env, "SLURM_STEP_NUM_TASKS")) {
    // An srun step without an MPI plugin: the ranks exist, MPI may not know them (checked after MPI_Init).
    t.source = "SLURM";
    t.world_rank = env_int(env, "SLURM_PROCID", 0);
    t.world_size = env_int(env, "SLURM_STEP_NUM_TASKS", 1);
    t.local_rank = env_int(env, "SLURM_LOCALID", 0);
    t.local_size = 0;
  }
  if (t.world_size == 0) t.world_size = t.world_rank + 1;  // unknown: MPI will say
  SKV_CHECK(t.world_rank < t.world_size, "{} environment: rank {} is not below the world size {}", t.source, t.world_rank,
            t.world_size);
  SKV_CHECK(t.local_size == 0 || t.local_rank < t.local_size, "{} environment: local rank {} is not below the local size {}",
            t.source, t.local_rank, t.local_size);
  return t;
}

Topology topology_from_env() {
  return topology_from_env([](const char* n) -> const char* { return std::getenv(n); });
}

ParallelPlan plan_parallel(int world_size, int world_rank, int tp) {
  SKV_CHECK(tp >= 1, "--tp {} must be at least 1", tp);
  SKV_CHECK(world_size >= 1 && world_rank >= 0 && world_rank < world_size, "rank {} of a world of {}", world_rank,
            world_size);
  if (world_size % tp != 0) {
    std::vector<int> ok;
    for (int t = 1; t <= world_size; ++t)
      if (world_size % t == 0) ok.push_back(t);
    SKV_FAIL("--tp {} does not divide the {} ranks of this job (world size = tp x replicas): start a multiple of {} "
             "ranks (mpirun -n {}) or use --tp {}",
             tp, world_size, tp, tp, fmt::join(ok, " | "));
  }
  ParallelPlan p;
  p.tp = tp;
  p.replicas = world_size / tp;
  p.replica = world_rank / tp;
  p.tp_rank = world_rank % tp;
  return p;
}

std::pair<int64_t, int64_t> replica_share(int64_t n, int replica, int replicas) {
  SKV_CHECK(replicas >= 1 && replica >= 0 && replica < replicas, "replica {} of {}", replica, replicas);
  const int64_t base = n / replicas, extra = n % replicas;
  const int64_t begin = replica * base + std::min<int64_t>(replica, extra);
  return {begin, begin + base + (replica < extra ? 1 : 0)};
}

int device_for_rank(const Topology& t, int device_count, const EnvLookup& env) {
  const int local_rank = t.local_rank, local_size = t.local_size;
  if (has(env, "SKV_CUDA_DEVICE")) {
    const int d = env_int(env, "SKV_CUDA_DEVICE", 0);
    SKV_CHECK(d < device_count, "SKV_CUDA_DEVICE={} but {} GPU(s) are visible to rank {}", d, device_count, t.world_rank);
    return d;
  }
  if (device_count == 1) return 0;
  const int need = std::max(local_rank + 1, local_size);
  SKV_CHECK(device_count > 0, "no GPU is visible to local rank {} (CUDA_VISIBLE_DEVICES='{}'); run with --device cpu or "
            "on a node with GPUs", local_rank, std::getenv("CUDA_VISIBLE_DEVICES") ? std::getenv("CUDA_VISIBLE_DEVICES") : "");
  SKV_CHECK(need <= device_count, "{} but only {} GPU(s) are visible (one rank per GPU): start at most {} ranks per node "
            "(srun --ntasks-per-node={}, mpirun --npernode {})",
            local_size > 0 ? fmt::format("this node runs {} ranks", local_size)
                           : fmt::format("local rank {} needs GPU {}", local_rank, local_rank),
            device_count, device_count, device_count, device_count);
  return local_rank;
}

int device_for_rank(const Topology& t, int device_count) {
  return device_for_rank(t, device_count, [](const char* n) -> const char* { return std::getenv(n); });
}

}  // namespace skv
