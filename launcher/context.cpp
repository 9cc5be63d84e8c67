#include "launcher/context.h"

#include <omp.h>
#include <sched.h>

#include <cstdlib>
#include <thread>

#include "parallel/cuda_device.h"
#include "parallel/session.h"
#include "parallel/topology.h"
#include "runtime/check.h"

extern "C" void openblas_set_num_threads(int);  // OpenBLAS (linked by skv_runtime's CPU backend)

namespace skv {

namespace {

// CPU threads per rank: the CPUs this rank may run on, shared by the ranks of its node when the
// launcher did not bind them (mpirun --bind-to none, --oversubscribe, srun without --cpu-bind), so N
// ranks do not each start a thread per core. OMP_NUM_THREADS / OPENBLAS_NUM_THREADS, when set, win.
void share_cpu_threads(int local_size) {
  if (local_size <= 1 || std::getenv("OMP_NUM_THREADS") || std::getenv("OPENBLAS_NUM_THREADS")) return;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return;
  const int mine = CPU_COUNT(&set), all = static_cast<int>(std::thread::hardware_concurrency());
  if (mine < all) return;  // bound by the launcher: its mask already is this rank's share
  const int n = std::max(1, mine / local_size);
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

// The backend of this rank, checked to sit on the GPU the topology chose (a CUDA backend started
// before make_context would be bound to whatever device was current then).
Backend& rank_backend(const std::string& device, int gpu) {
  Backend& be = backend_for(device);
  SKV_CHECK(device != "cuda" || be.device_ordinal() == gpu,
            "the CUDA backend runs on GPU {} but this rank was given GPU {} (it was started before the launcher chose "
            "the device)", be.device_ordinal(), gpu);
  return be;
}

// --weight-dtype and --compute-dtype onto the backend (one backend per process: both are always set).
void apply_dtypes(Backend& be, const ContextArgs& a) {
  const DType wdt = dtype_from_cli(a.weight_dtype), cdt = dtype_from_cli(a.compute_dtype);
  SKV_CHECK(cdt == DType::F32 || cdt == DType::BF16, "--compute-dtype {}: use f32 or bf16", a.compute_dtype);
  SKV_CHECK(cdt == DType::F32 || wdt != DType::F16,
            "--compute-dtype bf16 keeps the linear weights in bf16; it cannot be combined with --weight-dtype {}",
            a.weight_dtype);
  be.set_compute_dtype(DType::F32);
  be.set_weight_dtype(wdt);
  if (cdt != DType::F32) be.set_compute_dtype(cdt);
}

}  // namespace

void add_context_options(CLI::App* cmd, ContextArgs& a) {
  cmd->add_option("--device", a.device, "cpu or cuda")->capture_default_str();
  cmd->add_option("--tp", a.tp, "Tensor-parallel size (ranks per model replica; start the job with mpirun -n TP x "
                  "replicas)")->capture_default_str();
  cmd->add_option("--weight-dtype", a.weight_dtype,
                  "Linear-layer weights on the device: f32 (parity with the goldens), bf16 or f16 (FP32 accumulation)")
      ->capture_default_str();
  cmd->add_option("--compute-dtype", a.compute_dtype,
                  "Inputs of linear layers (and CPU convolutions): f32 (parity with the goldens) or bf16 (F32 "
                  "accumulation, bf16 weights; on the CPU needs avx512_bf16)")
      ->capture_default_str();
}

std::pair<int64_t, int64_t> RunContext::share(int64_t n) const { return replica_share(n, replica, replicas); }

RunContext make_context(const ContextArgs& a) {
  SKV_CHECK(a.tp >= 1, "--tp {} must be >= 1", a.tp);
  SKV_CHECK(job_problem().empty(), "{}", job_problem());
  const Topology& t = job_topology();
  RunContext c;
  if (!mpi_running() || t.world_size == 1) {
    SKV_CHECK(a.tp == 1, "--tp {} needs {} ranks but this process runs alone: start it as `mpirun -n {} scalekv ... --tp "
              "{}` (or `srun --mpi=pmix -n {} ...` under Slurm){}", a.tp, a.tp, a.tp, a.tp, a.tp,
              mpi_built() ? "" : "; this build also has no MPI");
    if (a.device == "cuda") {
      std::string why;
      c.device = device_for_rank(t, cuda_device_count(&why));
      cuda_use_device(c.device);
    }
    c.backend = &rank_backend(a.device, c.device);
    apply_dtypes(*c.backend, a);  // one-process runs honour them too
    c.tp = make_local_communicator();
    return c;
  }
  const ParallelPlan p = plan_parallel(t.world_size, t.world_rank, a.tp);
  if (a.device == "cpu") share_cpu_threads(t.local_size);
  c.world_rank = t.world_rank;
  c.world_size = t.world_size;
  c.replica = p.replica;
  c.replicas = p.replicas;
  if (a.device == "cuda") {
    std::string why;
    const int n = cuda_device_count(&why);
    SKV_CHECK(n > 0, "rank {}: --device cuda but no GPU is visible ({})", t.world_rank, why);
    c.device = device_for_rank(t, n);
    cuda_use_device(c.device);
  }
  c.backend = &rank_backend(a.device, c.device);
  apply_dtypes(*c.backend, a);
  c.world = make_mpi_world_communicator();
  std::unique_ptr<Communicator> group = c.world->split(p.replica, p.tp_rank);
  if (a.device == "cuda" && p.tp > 1) {
    std::string why;
    SKV_CHECK(nccl_built(&why), "--device cuda --tp {} needs NCCL: {}", p.tp, why);
    c.tp_host = std::move(group);
    c.tp = make_nccl_communicator(*c.tp_host, c.device, c.backend->native_stream());
  } else {
    c.tp = std::move(group);
  }
  return c;
}

}  // namespace skv
