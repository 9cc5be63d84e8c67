// communicator.h - collectives for tensor parallelism, one interface for every transport.
// Backends: `local` (one rank, no-ops), `mpi` (host buffers), `nccl` (device buffers). A
// tensor-parallel layer is the single-device layer plus one all_reduce (Megatron/FasterTransformer);
// the TP degree never leaks into the math. Reductions are deterministic on CPU: element i is always
// summed as x_0 + x_1 + ... + x_{n-1} in rank order and every rank receives the same bits, so a TP run
// is reproducible run to run and the replicated parts of the model stay identical on every rank.
// Every collective waits at most CollectiveOptions::timeout_s for the other ranks (a watchdog): a
// rank that died or hangs turns into an error naming the collective instead of a hung job. On MPI the
// error names the rank(s) that never arrived, not only the one that waited: each communicator numbers
// its collectives, and a rank whose watchdog fires asks the others (point-to-point on a private tag)
// which collective they are in; a rank that is waiting answers from its polling loop, one working
// outside the collectives from collective_keepalive(), one that is stopped or hung does not. The wait
// goes on while every missing rank answers and makes progress (communicator_mpi.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "runtime/dtype.h"
#include "runtime/tensor.h"

namespace skv {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;

  // Which memory a buffer lives in is part of the contract:
  //  - all_reduce_sum / all_gather / broadcast take buffers in the communicator's own memory: device
  //    memory when device_buffers() (nccl), host memory otherwise. Model code reaches them through
  //    all_reduce_tensor, with tensors of the backend whose stream() this communicator shares.
  //  - the *_host calls take host memory on every transport (statistics, budgets, tokens); a device
  //    communicator stages them through device memory. Never hand a std::vector to the first group.
  // In place, element-wise sum over all ranks. F32 (and F16/BF16 where the transport supports it).
  virtual void all_reduce_sum(void* buf, size_t count, DType dt) = 0;
  // recv holds size() blocks of `count` elements, block i from rank i.
  virtual void all_gather(const void* send, void* recv, size_t count, DType dt) = 0;
  virtual void broadcast(void* buf, size_t bytes, int root) = 0;
  // A backend tensor (device memory on a GPU backend): the tensor-parallel all-reduce of activations.
  virtual void all_reduce_tensor(Tensor& t);
  // Host memory on every transport. The defaults call the buffer versions on host communicators and
  // refuse on device ones (which must override them).
  virtual void all_reduce_sum_host(void* buf, size_t count, DType dt);
  virtual void broadcast_host(void* buf, size_t bytes, int root);
  virtual void barrier() = 0;
  // Buffers live on the GPU (nccl) rather than in host memory (local, mpi).
  virtual bool device_buffers() const { return false; }
  // The CUDA stream device collectives are queued on (null: host communicators).
  virtual void* stream() const { return nullptr; }
  // The ranks with the same color form a new communicator, ordered by key (MPI_Comm_split).
  // Collective over this communicator. Backends that cannot split throw.
  virtual std::unique_ptr<Communicator> split(int color, int key);

  // Bytes moved by all_reduce_sum since construction (for benchmarks).
  int64_t bytes_all_reduced() const { return bytes_all_reduced_; }
  double seconds_in_collectives() const { return seconds_in_collectives_; }

 protected:
  int64_t bytes_all_reduced_ = 0;
  double seconds_in_collectives_ = 0.0;
};

// The watchdog's default: after this long in one collective a rank asks the others where they are,
// and waits 0.75 x as long again for the answers. A stopped rank is named about 1.75 x this (105 s)
// after another rank first needs it; a rank that works on (loading, decoding) answers and is waited
// for. Sized from measurements (README, Reliability: VAR-d36 at TP 2 on CPU: the longest time a rank
// could not answer, 21 s, is under the 45 s answer window; the longest wait in one collective, 6 s).
inline constexpr double kDefaultCollectiveTimeout = 60;

struct CollectiveOptions {
  double timeout_s = kDefaultCollectiveTimeout;  // watchdog period per wait in a collective; 0 waits forever
  size_t segment_bytes = size_t(64) << 20;  // all-reduce works in pieces of at most this many bytes (mpi)
};
// The defaults, with SKV_COLLECTIVE_TIMEOUT (seconds; 0 = no watchdog) applied.
CollectiveOptions collective_options_from_env();

// Long work outside the collectives (loading weights, a decoder, one scale of a model) calls this now
// and then: it answers the other ranks' watchdog questions ("alive, working"), so a rank that waits
// for this one in a collective waits on instead of failing, while a stopped or hung rank, which
// cannot answer, is named within about 1.75 x timeout_s. Cheap: a clock read; MPI at most every 10 ms.
// Main thread only (outside OpenMP regions it is a no-op).
void collective_keepalive();

// What this process's collectives looked like, every communicator together (the MPI transport
// records it): the longest work between leaving one collective and entering the next, the longest
// wait inside one (how late the last rank arrived), and the longest time this rank could not answer
// a watchdog question (no collective and no keepalive point: what 0.75 x the timeout must cover).
// Printed at the end of a job, one line per rank, when SKV_COLLECTIVE_STATS=1.
struct CollectiveStats {
  int64_t calls = 0;
  double longest_gap_s = 0;
  std::string gap_before;  // the collective that ended the longest gap
  double longest_wait_s = 0;
  std::string wait_in;     // the collective of the longest wait
  double longest_silence_s = 0;
  std::string silence_before;  // what ended it: a collective or "a keepalive point"
};
const CollectiveStats& collective_stats();
std::string collective_stats_line(int world_rank);
bool collective_stats_wanted();  // SKV_COLLECTIVE_STATS=1
// Recorders for transports: a collective begins (the gap since the last one ends), ends, waited.
void note_collective_begin(const char* what, int64_t seq);
void note_collective_end();
void note_collective_wait(double seconds, const char* what, int64_t seq);
void note_keepalive();

// A communicator of one rank: collectives are identity operations.
std::unique_ptr<Communicator> make_local_communicator();

// Every rank of the MPI job (MPI_COMM_WORLD), host buffers. Throws when this build has no MPI or MPI
// was not started (parallel/session.h starts it under a launcher).
std::unique_ptr<Communicator> make_mpi_world_communicator(const CollectiveOptions& o = collective_options_from_env());
bool mpi_built();

// NCCL over the ranks of `bootstrap` (same rank numbering), on CUDA device `device`, device buffers:
// rank 0 makes the ncclUniqueId and broadcasts it over `bootstrap`; ncclCommInitRank waits at most
// o.timeout_s. Operations are queued on `stream`, which must be the stream of the backend whose
// kernels write the buffers (Backend::native_stream(); the backend's stream is non-blocking, so the
// legacy default stream would NOT order a collective after them): null is refused. Each call waits for
// the stream with the watchdog before it returns. Throws with the reason when the build has no NCCL.
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap, int device, void* stream = nullptr,
                                                     const CollectiveOptions& o = collective_options_from_env());
bool nccl_built(std::string* why = nullptr);

}  // namespace skv
