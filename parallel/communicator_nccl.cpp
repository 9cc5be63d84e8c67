// communicator_nccl.cpp - the NCCL communicator: device buffers, one rank per GPU.
// Bootstrapped over another communicator (MPI): rank 0 makes the ncclUniqueId and broadcasts it, then
// every rank calls ncclCommInitRankConfig. The communicator is non-blocking (config.blocking = 0) so
// that initialisation and every collective can be watched with a deadline: past it the communicator
// is aborted (ncclCommAbort) and the call throws, instead of a missing rank hanging the job. Each call
// enqueues on the stream it was given and waits for that stream, so it is complete on return.
// Compiled only where the CUDA toolkit has NCCL (SKV_HAVE_NCCL); elsewhere the factory says why.
#include "parallel/communicator.h"
#include "runtime/check.h"

#ifdef SKV_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#include <sched.h>

#include <chrono>
#endif

namespace skv {

#ifdef SKV_HAVE_NCCL

bool nccl_built(std::string* why) {
  if (why) why->clear();
  return true;
}

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

ncclDataType_t nccl_type(DType dt) {
  switch (dt) {
    case DType::F32: return ncclFloat32;
    case DType::F16: return ncclFloat16;
    case DType::BF16: return ncclBfloat16;
    case DType::I32: return ncclInt32;
    case DType::I64: return ncclInt64;
    case DType::U8: return ncclUint8;
  }
  SKV_FAIL("NCCL: unsupported dtype {}", dtype_name(dt));
}

#define SKV_CUDA_OK(call)                                                                        \
  do {                                                                                           \
    const cudaError_t e_ = (call);                                                               \
    SKV_CHECK(e_ == cudaSuccess, "{} failed: {}", #call, cudaGetErrorString(e_));                \
  } while (0)

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(Communicator& boot, int device, cudaStream_t stream, CollectiveOptions o)
      : rank_(boot.rank()), size_(boot.size()), device_(device), stream_(stream), opt_(o) {
    SKV_CUDA_OK(cudaSetDevice(device_));
    ncclUniqueId id{};
    if (rank_ == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    boot.broadcast(&id, sizeof(id), 0);
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    const ncclResult_t r = ncclCommInitRankConfig(&comm_, size_, id, rank_, &cfg);
    SKV_CHECK(r == ncclSuccess || r == ncclInProgress, "ncclCommInitRankConfig (rank {} of {}, GPU {}) failed: {}", rank_,
              size_, device_, ncclGetErrorString(r));
    settle("ncclCommInitRank");
    SKV_CUDA_OK(cudaMalloc(&scratch_, 64));
    SKV_CUDA_OK(cudaMemset(scratch_, 0, 64));
  }
  ~NcclCommunicator() override {
    if (scratch_) cudaFree(scratch_);
    if (staging_) cudaFreeAsync(staging_, stream_);
    if (comm_) {
      if (aborted_) return;
      ncclCommFinalize(comm_);
      ncclResult_t st = ncclInProgress;
      const double t0 = now_s();
      while (st == ncclInProgress && now_s() - t0 < 10) ncclCommGetAsyncError(comm_, &st);
      ncclCommDestroy(comm_);
    }
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "nccl"; }
  bool device_buffers() const override { return true; }
  void* stream() const override { return stream_; }

  void all_reduce_sum(void* buf, size_t count, DType dt) override {
    SKV_CHECK(dt != DType::U8, "all_reduce_sum: U8 cannot be summed");
    bytes_all_reduced_ += static_cast<int64_t>(count * dtype_size(dt));
    if (count == 0) return;
    const double t0 = now_s();
    launch(ncclAllReduce(buf, buf, count, nccl_type(dt), ncclSum, comm_, stream_), "ncclAllReduce");
    finish("all_reduce", count * dtype_size(dt));
    seconds_in_collectives_ += now_s() - t0;
  }
  void all_gather(const void* send, void* recv, size_t count, DType dt) override {
    if (count == 0) return;
    const double t0 = now_s();
    launch(ncclAllGather(send, recv, count, nccl_type(dt), comm_, stream_), "ncclAllGather");
    finish("all_gather", count * dtype_size(dt));
    seconds_in_collectives_ += now_s() - t0;
  }
  void broadcast(void* buf, size_t bytes, int root) override {
    SKV_CHECK(root >= 0 && root < size_, "broadcast root {} outside a communicator of {} ranks", root, size_);
    if (bytes == 0) return;
    const double t0 = now_s();
    launch(ncclBroadcast(buf, buf, bytes, ncclUint8, root, comm_, stream_), "ncclBroadcast");
    finish("broadcast", bytes);
    seconds_in_collectives_ += now_s() - t0;
  }
  // Host memory: staged through a device buffer on the same stream (small: statistics, tokens).
  void all_reduce_sum_host(void* buf, size_t count, DType dt) override {
    staged(buf, count * dtype_size(dt), "all_reduce (host memory)", [&](void* d) { all_reduce_sum(d, count, dt); });
  }
  void broadcast_host(void* buf, size_t bytes, int root) override {
    staged(buf, bytes, "broadcast (host memory)", [&](void* d) { broadcast(d, bytes, root); });
  }
  void barrier() override {
    const double t0 = now_s();
    launch(ncclAllReduce(scratch_, scratch_, 1, ncclInt32, ncclSum, comm_, stream_), "ncclAllReduce (barrier)");
    finish("barrier", 0);
    seconds_in_collectives_ += now_s() - t0;
  }

 private:
  // Copies `bytes` of host `buf` to the device staging buffer, runs op on it, copies the result back.
  template <class Op>
  void staged(void* buf, size_t bytes, const char* what, Op op) {
    if (bytes == 0) return;
    void* d = staging(bytes);
    SKV_CUDA_OK(cudaMemcpyAsync(d, buf, bytes, cudaMemcpyHostToDevice, stream_));
    op(d);
    SKV_CUDA_OK(cudaMemcpyAsync(buf, d, bytes, cudaMemcpyDeviceToHost, stream_));
    finish(what, bytes);
  }
  void* staging(size_t bytes) {
    if (bytes > staging_bytes_) {
      if (staging_) SKV_CUDA_OK(cudaFreeAsync(staging_, stream_));
      SKV_CUDA_OK(cudaMallocAsync(&staging_, bytes, stream_));
      staging_bytes_ = bytes;
    }
    return staging_;
  }
  void check(ncclResult_t r, const char* what) {
    SKV_CHECK(r == ncclSuccess, "{} failed on rank {} (GPU {}): {}", what, rank_, device_, ncclGetErrorString(r));
  }
  void fail_aborted(const std::string& msg) {
    if (comm_ && !aborted_) ncclCommAbort(comm_);
    aborted_ = true;
    SKV_FAIL("{}", msg);
  }
  // Non-blocking communicator: a call may return ncclInProgress; wait until it settles.
  void settle(const char* what) {
    const double t0 = now_s();
    ncclResult_t st = ncclInProgress;
    for (;;) {
      const ncclResult_t r = ncclCommGetAsyncError(comm_, &st);
      if (r != ncclSuccess) st = r;
      if (st != ncclInProgress) break;
      if (opt_.timeout_s > 0 && now_s() - t0 > opt_.timeout_s)
        fail_aborted(fmt::format("{}: rank {} (GPU {}) waited {:.0f} s for the other {} ranks (SKV_COLLECTIVE_TIMEOUT)",
                                 what, rank_, device_, now_s() - t0, size_ - 1));
      sched_yield();
    }
    if (st != ncclSuccess)
      fail_aborted(fmt::format("{} failed on rank {} (GPU {}): {}", what, rank_, device_, ncclGetErrorString(st)));
  }
  void launch(ncclResult_t r, const char* what) {
    if (r == ncclInProgress) return settle(what);
    if (r != ncclSuccess) fail_aborted(fmt::format("{} failed on rank {} (GPU {}): {}", what, rank_, device_, ncclGetErrorString(r)));
  }
  // Waits for the stream with the watchdog, watching NCCL's asynchronous errors meanwhile.
  void finish(const char* what, size_t bytes) {
    const double t0 = now_s();
    for (long spin = 0;; ++spin) {
      const cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady)
        fail_aborted(fmt::format("{} on rank {} (GPU {}): {}", what, rank_, device_, cudaGetErrorString(q)));
      ncclResult_t st = ncclSuccess;
      ncclCommGetAsyncError(comm_, &st);
      if (st != ncclSuccess && st != ncclInProgress)
        fail_aborted(fmt::format("{} on rank {} (GPU {}): {}", what, rank_, device_, ncclGetErrorString(st)));
      if ((spin & 255) == 0 && opt_.timeout_s > 0 && now_s() - t0 > opt_.timeout_s)
        fail_aborted(fmt::format("{} of {} bytes over {} ranks: rank {} (GPU {}) waited {:.0f} s for the others "
                                 "(SKV_COLLECTIVE_TIMEOUT={} s)", what, bytes, size_, rank_, device_, now_s() - t0,
                                 opt_.timeout_s));
      if (spin > 1000) sched_yield();
    }
  }

  int rank_, size_, device_;
  cudaStream_t stream_;
  CollectiveOptions opt_;
  ncclComm_t comm_ = nullptr;
  void* scratch_ = nullptr;
  void* staging_ = nullptr;  // device copy of host buffers (*_host calls)
  size_t staging_bytes_ = 0;
  bool aborted_ = false;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap, int device, void* stream,
                                                     const CollectiveOptions& o) {
  SKV_CHECK(stream != nullptr, "NCCL communicator on GPU {}: no stream given (pass the backend's stream, or its "
            "collectives are not ordered after the kernels that write their buffers)", device);
  return std::make_unique<NcclCommunicator>(bootstrap, device, static_cast<cudaStream_t>(stream), o);
}

#else

bool nccl_built(std::string* why) {
  if (why) *why = "this build has no NCCL (it needs the CUDA toolkit with nccl.h and libnccl at configure time)";
  return false;
}

std::unique_ptr<Communicator> make_nccl_communicator(Communicator&, int device, void*, const CollectiveOptions&) {
  std::string why;
  nccl_built(&why);
  SKV_FAIL("cannot make an NCCL communicator on GPU {}: {}", device, why);
}

#endif

}  // namespace skv
