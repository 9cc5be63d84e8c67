#include "parallel/session.h"

#include <fmt/core.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "parallel/communicator.h"
#include "runtime/check.h"

#ifdef SKV_HAVE_MPI
#include <mpi.h>
#endif

namespace skv {

namespace {

Topology g_topo;
std::string g_problem;
bool g_mpi = false;
// Every rank meets here under the watchdog before MPI_Finalize, whose own wait has no deadline: a rank
// that finishes while another is stopped (e.g. in its decoder) ends with an error naming it instead
// of hanging in MPI_Finalize. A communicator of its own, so it never matches a collective of a rank
// that is still running a command.
std::unique_ptr<Communicator> g_end;

void print_stats() {
  if (collective_stats_wanted() && collective_stats().calls > 0)
    fmt::print(stderr, "{}\n", collective_stats_line(g_topo.world_rank));
}

void finalize_mpi() {
#ifdef SKV_HAVE_MPI
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (!init || fin) return;
  if (g_end) {
    std::fflush(stdout);
    try {
      g_end->barrier();
    } catch (const std::exception& e) {
      const auto* err = dynamic_cast<const Error*>(&e);
      fmt::print(stderr, "error: [rank {}/{}] at the end of the job, {}\nerror: rank {} failed; ending all {} ranks of "
                 "the job\n", g_topo.world_rank, g_topo.world_size, err ? err->message() : std::string(e.what()),
                 g_topo.world_rank, g_topo.world_size);
      print_stats();
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    print_stats();
    g_end.reset();
  }
  MPI_Finalize();
#endif
}

}  // namespace

ParallelSession::ParallelSession(int* argc, char*** argv) {
  try {
    g_topo = topology_from_env();
  } catch (const std::exception& e) {
    g_problem = e.what();
    return;
  }
  if (!g_topo.launched()) return;
#ifdef SKV_HAVE_MPI
  // MPI_THREAD_MULTIPLE: a server with several replicas talks to them from a service thread
  // (message_link.h); everything else calls MPI from the main thread only.
  int provided = 0;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
    g_problem = "MPI_Init_thread failed";
    return;
  }
  std::atexit(finalize_mpi);  // std::exit() paths (verify-golden's exit codes) finalize too
  g_mpi = true;
  const Topology env = g_topo;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_topo.world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_topo.world_size);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_topo.world_rank, MPI_INFO_NULL, &node);
  int nr = 0, ns = 1;
  MPI_Comm_rank(node, &nr);
  MPI_Comm_size(node, &ns);
  MPI_Comm_free(&node);
  g_topo.local_size = ns;  // node-local numbers from MPI: right whichever launcher (and mapping) was used
  g_topo.local_rank = nr;
  if (g_topo.world_size > 1) {
    try {
      g_end = make_mpi_world_communicator();
    } catch (const std::exception& e) {
      g_problem = e.what();
    }
  }
  if (env.world_size != g_topo.world_size || env.world_rank != g_topo.world_rank) {
    g_problem = fmt::format(
        "the launcher ({} variables) started rank {} of {}, but MPI sees rank {} of {}: the launcher and this MPI do "
        "not talk (under Slurm use srun --mpi=pmix; `srun --mpi=list` shows the plugins)",
        env.source, env.world_rank, env.world_size, g_topo.world_rank, g_topo.world_size);
  }
#else
  (void)argc;
  (void)argv;
  if (g_topo.world_size > 1)
    g_problem = fmt::format("the launcher ({} variables) started {} ranks, but this build has no MPI (install "
                            "libopenmpi-dev and rebuild)", g_topo.source, g_topo.world_size);
#endif
}

ParallelSession::~ParallelSession() { finalize_mpi(); }

int ParallelSession::fail(const std::string& what) {
  std::fflush(stdout);
  const Topology& t = g_topo;
  if (t.world_size <= 1) {
    fmt::print(stderr, "error: {}\n", what);
    std::fflush(stderr);
    return 1;
  }
  fmt::print(stderr, "error: [rank {}/{}] {}\nerror: rank {} failed; ending all {} ranks of the job\n", t.world_rank,
             t.world_size, what, t.world_rank, t.world_size);
  print_stats();
  std::fflush(stderr);
#ifdef SKV_HAVE_MPI
  if (g_mpi) MPI_Abort(MPI_COMM_WORLD, 1);
#endif
  std::_Exit(1);
}

const Topology& job_topology() { return g_topo; }
bool mpi_running() { return g_mpi; }
const std::string& job_problem() { return g_problem; }

}  // namespace skv
