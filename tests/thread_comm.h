// thread_comm.h - a tensor-parallel group of threads in one process, for tests that need several ranks
// before (or without) MPI: all_reduce_sum adds the ranks' buffers in rank order, so every rank gets
// bit-identical sums, as the real transports promise.
#pragma once

#include <barrier>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "parallel/communicator.h"
#include "runtime/check.h"

namespace skv::test {

class ThreadGroup {
 public:
  explicit ThreadGroup(int n) : n_(n), barrier_(n), bufs_(n, nullptr) {}
  int size() const { return n_; }

  class Comm final : public Communicator {
   public:
    Comm(ThreadGroup& g, int rank) : g_(g), rank_(rank) {}
    int rank() const override { return rank_; }
    int size() const override { return g_.n_; }
    std::string name() const override { return "threads"; }
    void all_reduce_sum(void* buf, size_t count, DType dt) override {
      SKV_CHECK(dt == DType::F32, "thread group: F32 only");
      g_.bufs_[rank_] = buf;
      g_.barrier_.arrive_and_wait();
      std::vector<float> sum(count, 0.0f);
      for (int r = 0; r < g_.n_; ++r)
        for (size_t i = 0; i < count; ++i) sum[i] += static_cast<const float*>(g_.bufs_[r])[i];
      g_.barrier_.arrive_and_wait();  // everyone has read every buffer
      std::memcpy(buf, sum.data(), count * sizeof(float));
      g_.barrier_.arrive_and_wait();
      bytes_all_reduced_ += static_cast<int64_t>(count * sizeof(float));
    }
    void all_gather(const void* send, void* recv, size_t count, DType dt) override {
      const size_t b = count * dtype_size(dt);
      g_.bufs_[rank_] = const_cast<void*>(send);
      g_.barrier_.arrive_and_wait();
      for (int r = 0; r < g_.n_; ++r) std::memcpy(static_cast<char*>(recv) + r * b, g_.bufs_[r], b);
      g_.barrier_.arrive_and_wait();
    }
    void broadcast(void* buf, size_t bytes, int root) override {
      g_.bufs_[rank_] = buf;
      g_.barrier_.arrive_and_wait();
      if (rank_ != root) std::memcpy(buf, g_.bufs_[root], bytes);
      g_.barrier_.arrive_and_wait();
    }
    void barrier() override { g_.barrier_.arrive_and_wait(); }

   private:
    ThreadGroup& g_;
    int rank_;
  };

  // Runs fn(rank, comm) on every rank in its own thread; rethrows the first failure.
  void run(const std::function<void(int, Communicator&)>& fn) {
    std::vector<std::thread> ts;
    std::vector<std::exception_ptr> errs(n_);
    for (int r = 0; r < n_; ++r)
      ts.emplace_back([&, r] {
        Comm c(*this, r);
        try {
          fn(r, c);
        } catch (...) {
          errs[r] = std::current_exception();
        }
      });
    for (auto& t : ts) t.join();
    for (auto& e : errs)
      if (e) std::rethrow_exception(e);
  }

 private:
  int n_;
  std::barrier<> barrier_;
  std::vector<void*> bufs_;
};

}  // namespace skv::test
