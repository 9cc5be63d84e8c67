// context.h - what every command that runs a model needs: the backend, this rank's place in the
// job (world rank, tensor-parallel group, data-parallel replica) and its communicator.
// Rank arithmetic lives in parallel/topology.h and nowhere else (TensorRT-LLM's WorldConfig); this
// file only turns it into communicators: world size = tp x replicas, TP groups are blocks of
// consecutive ranks, each replica takes a contiguous share of the requests. On CPU the TP group is
// an MPI communicator; with --device cuda it is NCCL (bootstrapped over that MPI group), one GPU per
// rank, the GPU being the node-local rank.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <utility>

#include "parallel/communicator.h"
#include "runtime/backend.h"

namespace skv {

struct ContextArgs {
  std::string device = "cpu";
  int tp = 1;
  std::string weight_dtype = "f32";  // Linear weights on the device: f32 (parity), bf16 or f16
  std::string compute_dtype = "f32"; // Inputs of linear layers and (CPU) convolutions: f32 (parity) or bf16
};
void add_context_options(CLI::App* cmd, ContextArgs& a);  // --device, --tp, --weight-dtype, --compute-dtype

struct RunContext {
  Backend* backend = nullptr;
  std::unique_ptr<Communicator> tp;      // this rank's tensor-parallel group
  std::unique_ptr<Communicator> world;   // every rank of the job (host buffers); null in a one-process run
  std::unique_ptr<Communicator> tp_host; // the MPI group an NCCL tp communicator was bootstrapped over
  int world_rank = 0, world_size = 1;
  int replica = 0, replicas = 1;         // data-parallel replicas split the requests
  int device = -1;                       // CUDA device of this rank (-1 on CPU)
  // The rank that writes outputs and prints reports for its replica.
  bool is_output_rank() const { return tp->rank() == 0; }
  // This replica's contiguous share [begin, end) of n requests.
  std::pair<int64_t, int64_t> share(int64_t n) const;
};

// Under mpirun/srun: splits the job into replicas of --tp ranks (the error says which sizes work).
// Started alone: --tp must be 1 (the error shows the mpirun command).
RunContext make_context(const ContextArgs& a);

}  // namespace skv
