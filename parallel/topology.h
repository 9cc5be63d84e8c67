// topology.h - where this process sits in a job: world rank/size and node-local rank, read from
// the launcher's environment (mpirun, srun, Hydra), and the split of the world into
// tensor-parallel groups and data-parallel replicas. All rank arithmetic lives here (TensorRT-LLM's
// WorldConfig), so no other file computes a group, a device or a share of the requests.
// Design choice: TP groups are blocks of consecutive world ranks (ranks 0..tp-1 are replica 0), so
// with one rank per GPU and tp <= GPUs per node a whole group sits on one node's NVLink.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>

namespace skv {

struct Topology {
  int world_rank = 0, world_size = 1;
  int local_rank = 0, local_size = 1;  // on this node; local_size 0 when the launcher does not say
  std::string source = "none";         // which variables were used: "OMPI", "PMIX", "PMI", "SLURM", "none"
  bool launched() const { return source != "none"; }
};

using EnvLookup = std::function<const char*(const char*)>;

// Reads, in this order: OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE} (Open MPI's mpirun),
// PMIX_RANK + SLURM_*/OMPI size variables (srun --mpi=pmix), PMI_RANK/PMI_SIZE (MPICH Hydra,
// srun --mpi=pmi2) with MPI_LOCALRANKID, and SLURM_PROCID/SLURM_LOCALID/SLURM_STEP_NUM_TASKS (an
// srun step). A Slurm batch script outside srun is not a launch (it is one process). Malformed
// values throw naming the variable.
Topology topology_from_env(const EnvLookup& env);
Topology topology_from_env();  // the process environment

// Tensor-parallel group and replica of a world rank.
struct ParallelPlan {
  int tp = 1, replicas = 1;
  int tp_rank = 0, replica = 0;
  int group_first_rank() const { return replica * tp; }
};
// Checks that tp divides the world size (the error names the sizes that work).
ParallelPlan plan_parallel(int world_size, int world_rank, int tp);

// The contiguous share [begin, end) of n requests that replica r of R handles (the first n % R
// replicas take one more). Image ids stay global, so the output does not depend on R.
std::pair<int64_t, int64_t> replica_share(int64_t n, int replica, int replicas);

// The GPU of this rank - the one place it is decided. make_context makes it current before the CUDA
// backend starts, and the backend (stream, cuBLAS handle, memory pool) and NCCL bind to the current
// device, so the two can never disagree. In order:
//   SKV_CUDA_DEVICE=N            that device (must be visible);
//   exactly one visible GPU      device 0, whatever the local rank (srun --gpus-per-task=1, or a
//                                CUDA_VISIBLE_DEVICES per rank: each rank sees only its own GPU);
//   otherwise                    the local rank from the topology (the launcher's own variables, so an
//                                mpiexec inside sbatch, whose ranks all inherit SLURM_LOCALID=0, still
//                                spreads over the GPUs); throws when the node runs more ranks than GPUs.
int device_for_rank(const Topology& t, int device_count, const EnvLookup& env);
int device_for_rank(const Topology& t, int device_count);  // the process environment

}  // namespace skv
