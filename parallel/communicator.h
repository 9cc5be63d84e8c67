// communicator.h - collectives for tensor parallelism, one interface for every transport.
// Backends: `local` (one rank, no-ops), `mpi` (host buffers), `nccl` (device buffers). A
// tensor-parallel layer is the single-device layer plus one all_reduce (Megatron/FasterTransformer);
// the TP degree never leaks into the math. Reductions are deterministic on CPU (a fixed order), so a
// TP run is reproducible run to run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "runtime/dtype.h"

namespace skv {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;

  // In place, element-wise sum over all ranks. F32 (and F16/BF16 where the transport supports it).
  virtual void all_reduce_sum(void* buf, size_t count, DType dt) = 0;
  // recv holds size() blocks of `count` elements, block i from rank i.
  virtual void all_gather(const void* send, void* recv, size_t count, DType dt) = 0;
  virtual void broadcast(void* buf, size_t bytes, int root) = 0;
  virtual void barrier() = 0;

  // Bytes moved by all_reduce_sum since construction (for benchmarks).
  int64_t bytes_all_reduced() const { return bytes_all_reduced_; }
  double seconds_in_collectives() const { return seconds_in_collectives_; }

 protected:
  int64_t bytes_all_reduced_ = 0;
  double seconds_in_collectives_ = 0.0;
};

// A communicator of one rank: collectives are identity operations.
std::unique_ptr<Communicator> make_local_communicator();

}  // namespace skv
