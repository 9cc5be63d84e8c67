// The NCCL communicator against the same semantics as the MPI one, on device buffers (plain
// cudaMalloc'd memory): all-reduce of F32/F16/BF16/I32/I64 at odd sizes, all-gather, broadcast from
// every root, barrier. One GPU per rank; skipped, with the reason, where the build has no NCCL or the
// node has fewer visible GPUs than ranks. F32 sums are compared with a tolerance (NCCL does not
// promise the rank order of the MPI backend), integers exactly.
#include <fmt/core.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "launcher/context.h"
#include "parallel/communicator.h"
#include "parallel/cuda_device.h"
#include "runtime/hostdevice.h"

#ifdef SKV_HAVE_NCCL
#include <cuda_runtime.h>
#endif

namespace skv {

namespace {

// The NCCL communicator over the world, or a reason to skip.
std::unique_ptr<Communicator> nccl_world(std::unique_ptr<Communicator>& boot, std::string* skip) {
  boot = make_mpi_world_communicator();
  std::string why;
  if (!nccl_built(&why)) {
    *skip = why;
    return nullptr;
  }
  const int gpus = cuda_device_count(&why);
  if (gpus < boot->size()) {
    *skip = fmt::format("{} ranks need {} GPUs, {} visible ({})", boot->size(), boot->size(), gpus, why);
    return nullptr;
  }
#ifdef SKV_HAVE_NCCL
  // The buffers below are written with plain (legacy-stream) copies; a blocking stream is ordered
  // after them. Production passes the backend's stream (RunsOnTheBackendStream).
  cudaSetDevice(boot->rank());
  cudaStream_t s = nullptr;
  cudaStreamCreate(&s);
  return make_nccl_communicator(*boot, boot->rank(), s);
#else
  return make_nccl_communicator(*boot, boot->rank());
#endif
}

#ifdef SKV_HAVE_NCCL
struct DeviceBuffer {
  void* p = nullptr;
  size_t bytes = 0;
  explicit DeviceBuffer(size_t n) : bytes(n) { EXPECT_EQ(cudaMalloc(&p, std::max<size_t>(n, 1)), cudaSuccess); }
  ~DeviceBuffer() { cudaFree(p); }
  void put(const void* h) { EXPECT_EQ(cudaMemcpy(p, h, bytes, cudaMemcpyHostToDevice), cudaSuccess); }
  void get(void* h) const { EXPECT_EQ(cudaMemcpy(h, p, bytes, cudaMemcpyDeviceToHost), cudaSuccess); }
};
#endif

}  // namespace

// A communicator without a stream would queue on the legacy default stream, which a non-blocking
// backend stream is not ordered against: refused up front (checked here without a GPU).
TEST(CommunicatorNccl, RefusesToRunWithoutTheBackendStream) {
  if (!nccl_built()) GTEST_SKIP() << "this build has no NCCL";
  auto local = make_local_communicator();
  try {
    make_nccl_communicator(*local, 0, nullptr);
    ADD_FAILURE() << "an NCCL communicator without a stream was made";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("no stream given"), std::string::npos) << e.what();
  }
}

// The launcher's TP communicator on --device cuda runs on the CUDA backend's own stream (so an
// all-reduce is ordered after the GEMM that wrote its input, with no host synchronisation).
TEST(CommunicatorNccl, RunsOnTheBackendStream) {
  auto boot = make_mpi_world_communicator();
  std::string why;
  int64_t skipping = (!nccl_built(&why) || cuda_device_count(&why) < boot->size() || boot->size() < 2) ? 1 : 0;
  boot->all_reduce_sum(&skipping, 1, DType::I64);
  if (skipping) GTEST_SKIP() << "needs NCCL, 2+ ranks and one GPU per rank (" << why << ")";
  ContextArgs a;
  a.device = "cuda";
  a.tp = boot->size();
  RunContext ctx = make_context(a);
  ASSERT_TRUE(ctx.tp->device_buffers());
  EXPECT_NE(ctx.backend->native_stream(), nullptr);
  EXPECT_EQ(ctx.tp->stream(), ctx.backend->native_stream());
  EXPECT_EQ(ctx.backend->device_ordinal(), ctx.device);
}

TEST(CommunicatorNccl, CollectivesOnDeviceBuffers) {
  std::unique_ptr<Communicator> boot;
  std::string skip;
  auto c = nccl_world(boot, &skip);
  // Every rank must agree on skipping (the checks above are the same everywhere but the GPU count).
  int64_t skipping = c ? 0 : 1;
  boot->all_reduce_sum(&skipping, 1, DType::I64);
  if (skipping) GTEST_SKIP() << (skip.empty() ? "another rank cannot run NCCL" : skip);
#ifdef SKV_HAVE_NCCL
  EXPECT_TRUE(c->device_buffers());
  EXPECT_EQ(c->size(), boot->size());
  EXPECT_EQ(c->rank(), boot->rank());
  const int R = c->size(), me = c->rank();
  for (size_t n : {size_t(1), size_t(7), size_t(1023), size_t(65537)}) {
    // F32: tolerance; I64: exact.
    std::vector<float> f(n), fw(n, 0);
    std::vector<int64_t> q(n), qw(n, 0);
    for (size_t i = 0; i < n; ++i) {
      for (int r = 0; r < R; ++r) {
        fw[i] += 0.5f * static_cast<float>(r + 1) + 0.001f * static_cast<float>(i % 97);
        qw[i] += (int64_t(1) << 40) * (r + 1) + static_cast<int64_t>(i);
      }
      f[i] = 0.5f * static_cast<float>(me + 1) + 0.001f * static_cast<float>(i % 97);
      q[i] = (int64_t(1) << 40) * (me + 1) + static_cast<int64_t>(i);
    }
    DeviceBuffer df(n * 4), dq(n * 8);
    df.put(f.data());
    dq.put(q.data());
    c->all_reduce_sum(df.p, n, DType::F32);
    c->all_reduce_sum(dq.p, n, DType::I64);
    df.get(f.data());
    dq.get(q.data());
    for (size_t i = 0; i < n; ++i) {
      ASSERT_NEAR(f[i], fw[i], 1e-4) << n;
      ASSERT_EQ(q[i], qw[i]) << n;
    }
    // F16 / BF16 / I32: small integers are exact in every type.
    for (DType dt : {DType::F16, DType::BF16, DType::I32}) {
      const size_t es = dtype_size(dt);
      std::vector<uint8_t> h(n * es);
      for (size_t i = 0; i < n; ++i) {
        const float v = static_cast<float>((me + 1) * (i % 5));
        if (dt == DType::I32) {
          const int32_t x = static_cast<int32_t>(v);
          std::memcpy(&h[i * 4], &x, 4);
        } else {
          const uint16_t x = dt == DType::F16 ? f32_to_f16(v) : f32_to_bf16(v);
          std::memcpy(&h[i * 2], &x, 2);
        }
      }
      DeviceBuffer d(n * es);
      d.put(h.data());
      c->all_reduce_sum(d.p, n, dt);
      d.get(h.data());
      for (size_t i = 0; i < n; ++i) {
        const float want = static_cast<float>(R * (R + 1) / 2 * (i % 5));
        float got;
        if (dt == DType::I32) {
          int32_t x;
          std::memcpy(&x, &h[i * 4], 4);
          got = static_cast<float>(x);
        } else {
          uint16_t x;
          std::memcpy(&x, &h[i * 2], 2);
          got = dt == DType::F16 ? f16_to_f32(x) : bf16_to_f32(x);
        }
        ASSERT_EQ(got, want) << dtype_name(dt) << " n=" << n << " i=" << i;
      }
    }
    // All-gather: block r from rank r.
    std::vector<uint8_t> s(n * 2), g(n * 2 * R);
    for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<uint8_t>(me * 31 + i);
    DeviceBuffer ds(s.size()), dg(g.size());
    ds.put(s.data());
    c->all_gather(ds.p, dg.p, n, DType::BF16);
    dg.get(g.data());
    for (int r = 0; r < R; ++r)
      for (size_t i = 0; i < s.size(); ++i) ASSERT_EQ(g[r * s.size() + i], static_cast<uint8_t>(r * 31 + i));
    // Broadcast from every root.
    for (int root = 0; root < R; ++root) {
      std::vector<uint8_t> b(n + 3, static_cast<uint8_t>(me == root ? 0x5A + root : 0));
      DeviceBuffer db(b.size());
      db.put(b.data());
      c->broadcast(db.p, b.size(), root);
      db.get(b.data());
      for (uint8_t x : b) ASSERT_EQ(x, static_cast<uint8_t>(0x5A + root));
    }
  }
  c->barrier();
  EXPECT_GT(c->bytes_all_reduced(), 0);
#endif
}

}  // namespace skv
