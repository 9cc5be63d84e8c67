// session.h - the life of MPI in the `scalekv` process, and the failure rule of a multi-rank job.
// main() makes one ParallelSession before parsing: when a launcher started the process (mpirun, srun,
// Hydra: see topology.h) it calls MPI_Init and MPI_Finalize at exit; a process started alone never
// touches MPI. The failure rule: a rank that fails prints one line naming itself and calls MPI_Abort,
// which ends every rank of the job within seconds - a failing rank never leaves the others waiting in
// a collective (the collectives' watchdog covers a rank that hangs instead of failing). Before
// MPI_Finalize, which waits without a deadline, the ranks meet in a barrier under the watchdog, so a
// rank that stops while the others finish is named too. SKV_COLLECTIVE_STATS=1 prints, per rank at the
// end, the longest gap between collectives and the longest wait in one (communicator.h).
#pragma once

#include <string>

#include "parallel/topology.h"

namespace skv {

class ParallelSession {
 public:
  ParallelSession(int* argc, char*** argv);
  ~ParallelSession();
  ParallelSession(const ParallelSession&) = delete;
  ParallelSession& operator=(const ParallelSession&) = delete;

  // Prints "error: [rank r/n] <what>" (the rank only in a multi-rank job) to stderr; in a multi-rank
  // job ends every rank with MPI_Abort. Returns the exit code for a one-rank job.
  int fail(const std::string& what);
};

// This process's place in the job: MPI's numbers once MPI is running (world rank and size from
// MPI_COMM_WORLD, node-local rank and size from MPI_Comm_split_type), the environment's otherwise.
const Topology& job_topology();
bool mpi_running();
// Non-empty when the launcher and MPI disagree (e.g. srun started 2 tasks without --mpi=pmix and each
// became a world of one); commands that run a model refuse to start with this message.
const std::string& job_problem();

}  // namespace skv
