// device_claiming_comm.h - a test communicator that holds the CUDA communicators' memory contract on
// the CPU: it claims device buffers (device_buffers() is true, as NCCL's) and refuses every raw-pointer
// collective, because in a CPU test no pointer handed to them can be device memory - the only device
// memory there is are backend tensors, which reach it through all_reduce_tensor. Host memory must come
// through the *_host calls. Wrapping a rank's communicator in it makes every model, policy and
// calibration path prove, without a GPU, that it never hands NCCL a std::vector.
#pragma once

#include "parallel/communicator.h"
#include "runtime/check.h"

namespace skv::test {

class DeviceClaimingComm final : public Communicator {
 public:
  explicit DeviceClaimingComm(Communicator& inner) : inner_(inner) {}
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  std::string name() const override { return "device-claiming(" + inner_.name() + ")"; }
  bool device_buffers() const override { return true; }

  void all_reduce_sum(void*, size_t count, DType) override { refuse("all_reduce_sum", count); }
  void all_gather(const void*, void*, size_t count, DType) override { refuse("all_gather", count); }
  void broadcast(void*, size_t bytes, int) override { refuse("broadcast", bytes); }
  void barrier() override { inner_.barrier(); }

  void all_reduce_tensor(Tensor& t) override {
    ++tensor_calls;
    inner_.all_reduce_sum(t.raw(), static_cast<size_t>(t.numel()), t.dtype());
  }
  void all_reduce_sum_host(void* buf, size_t count, DType dt) override {
    ++host_calls;
    inner_.all_reduce_sum(buf, count, dt);
  }
  void broadcast_host(void* buf, size_t bytes, int root) override {
    ++host_calls;
    inner_.broadcast(buf, bytes, root);
  }

  int tensor_calls = 0, host_calls = 0;

 private:
  [[noreturn]] void refuse(const char* what, size_t n) {
    SKV_FAIL("{}({}) on a device-buffer communicator with a host pointer: host memory must go through the *_host "
             "calls, tensors through all_reduce_tensor", what, n);
  }
  Communicator& inner_;
};

}  // namespace skv::test
