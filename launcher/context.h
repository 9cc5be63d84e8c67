// context.h - what every command that runs a model needs: the backend, this rank's place in the
// job (world rank, tensor-parallel group, data-parallel replica) and its communicator.
// Rank arithmetic lives here and nowhere else (TensorRT-LLM's WorldConfig).
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "parallel/communicator.h"
#include "runtime/backend.h"

namespace skv {

struct ContextArgs {
  std::string device = "cpu";
  int tp = 1;
  std::string weight_dtype = "f32";  // Linear weights on the device: f32 (parity), bf16 or f16
};
void add_context_options(CLI::App* cmd, ContextArgs& a);  // --device, --tp, --weight-dtype

struct RunContext {
  Backend* backend = nullptr;
  std::unique_ptr<Communicator> tp;  // this rank's tensor-parallel group
  int world_rank = 0, world_size = 1;
  int replica = 0, replicas = 1;     // data-parallel replicas split the requests
  // The rank that writes outputs and prints reports for its replica.
  bool is_output_rank() const { return tp->rank() == 0; }
};

RunContext make_context(const ContextArgs& a);

}  // namespace skv
