// The MPI communicator's semantics on every rank of the job: all-reduce of every summable dtype at
// sizes that do not divide by the rank count (and across segments), bit-for-bit equal to the
// rank-order sum on every rank; all-gather and broadcast of every dtype and odd sizes; groups made
// by split; the watchdog turning a missing rank into an error that names the collective and the
// ranks that never arrived (silent ones, and live ones still in an earlier collective).
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "parallel/communicator.h"
#include "runtime/check.h"
#include "runtime/hostdevice.h"

namespace skv {

namespace {

CollectiveOptions opts(double timeout_s = 60, size_t segment_bytes = size_t(64) << 20) {
  CollectiveOptions o;
  o.timeout_s = timeout_s;
  o.segment_bytes = segment_bytes;
  return o;
}

// Rank r's input value i for a dtype, as a float (values of very different magnitude so the order of
// summation shows in the F32 result).
float value(int rank, size_t i) {
  uint64_t z = (static_cast<uint64_t>(rank) << 40) + i + 0x9E3779B97F4A7C15ull;  // splitmix64
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  const float u = static_cast<float>(z >> 40) / static_cast<float>(1 << 24) * 2.0f - 1.0f;  // [-1, 1)
  const float mag[] = {1.0f, 1e-3f, 1e4f, 3e7f};
  return u * mag[(i + rank) % 4];
}

std::vector<uint8_t> make_input(DType dt, int rank, size_t n) {
  std::vector<uint8_t> b(n * dtype_size(dt));
  for (size_t i = 0; i < n; ++i) {
    const float v = value(rank, i);
    switch (dt) {
      case DType::F32: std::memcpy(&b[i * 4], &v, 4); break;
      case DType::F16: { const uint16_t h = f32_to_f16(v * 1e-4f); std::memcpy(&b[i * 2], &h, 2); break; }
      case DType::BF16: { const uint16_t h = f32_to_bf16(v); std::memcpy(&b[i * 2], &h, 2); break; }
      case DType::I32: { const int32_t x = static_cast<int32_t>(v); std::memcpy(&b[i * 4], &x, 4); break; }
      case DType::I64: {
        const int64_t x = (static_cast<int64_t>(v) << 20) + rank;  // beyond 32 bits
        std::memcpy(&b[i * 8], &x, 8);
        break;
      }
      default: break;
    }
  }
  return b;
}

// x_0 + x_1 + ... in rank order, with the communicator's accumulation rules.
std::vector<uint8_t> rank_order_sum(DType dt, int n_ranks, size_t n) {
  std::vector<std::vector<uint8_t>> in;
  for (int r = 0; r < n_ranks; ++r) in.push_back(make_input(dt, r, n));
  std::vector<uint8_t> out(n * dtype_size(dt));
  for (size_t i = 0; i < n; ++i) {
    switch (dt) {
      case DType::F32: {
        float acc;
        std::memcpy(&acc, &in[0][i * 4], 4);
        for (int r = 1; r < n_ranks; ++r) {
          float x;
          std::memcpy(&x, &in[r][i * 4], 4);
          acc = acc + x;
        }
        std::memcpy(&out[i * 4], &acc, 4);
        break;
      }
      case DType::F16:
      case DType::BF16: {
        float acc = 0;
        for (int r = 0; r < n_ranks; ++r) {
          uint16_t h;
          std::memcpy(&h, &in[r][i * 2], 2);
          const float x = dt == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
          acc = r == 0 ? x : acc + x;
        }
        const uint16_t h = dt == DType::F16 ? f32_to_f16(acc) : f32_to_bf16(acc);
        std::memcpy(&out[i * 2], &h, 2);
        break;
      }
      case DType::I32: {
        uint32_t acc = 0;
        for (int r = 0; r < n_ranks; ++r) {
          int32_t x;
          std::memcpy(&x, &in[r][i * 4], 4);
          acc += static_cast<uint32_t>(x);
        }
        std::memcpy(&out[i * 4], &acc, 4);
        break;
      }
      case DType::I64: {
        uint64_t acc = 0;
        for (int r = 0; r < n_ranks; ++r) {
          int64_t x;
          std::memcpy(&x, &in[r][i * 8], 8);
          acc += static_cast<uint64_t>(x);
        }
        std::memcpy(&out[i * 8], &acc, 8);
        break;
      }
      default: break;
    }
  }
  return out;
}

const size_t kSizes[] = {0, 1, 2, 3, 5, 7, 64, 1023, 4099, 65537};

}  // namespace

TEST(CommunicatorMpi, WorldMatchesMpi) {
  auto c = make_mpi_world_communicator(opts());
  int r = 0, n = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  EXPECT_EQ(c->rank(), r);
  EXPECT_EQ(c->size(), n);
  EXPECT_EQ(c->name(), "mpi");
  EXPECT_FALSE(c->device_buffers());
}

TEST(CommunicatorMpi, AllReduceIsTheRankOrderSumForEveryDtypeAndSize) {
  auto c = make_mpi_world_communicator(opts());
  for (DType dt : {DType::F32, DType::F16, DType::BF16, DType::I32, DType::I64}) {
    for (size_t n : kSizes) {
      std::vector<uint8_t> buf = make_input(dt, c->rank(), n);
      const int64_t before = c->bytes_all_reduced();
      c->all_reduce_sum(buf.data(), n, dt);
      EXPECT_EQ(c->bytes_all_reduced() - before, static_cast<int64_t>(n * dtype_size(dt)));
      const std::vector<uint8_t> want = rank_order_sum(dt, c->size(), n);
      EXPECT_TRUE(buf == want) << dtype_name(dt) << " n=" << n << " ranks=" << c->size();
    }
  }
}

TEST(CommunicatorMpi, AllReduceInSmallSegmentsGivesTheSameBits) {
  // 64-byte segments: a 1001-float buffer takes 63 segments, each split unevenly over the ranks.
  auto c = make_mpi_world_communicator(opts(60, 64));
  for (size_t n : {size_t(1001), size_t(17)}) {
    std::vector<uint8_t> buf = make_input(DType::F32, c->rank(), n);
    c->all_reduce_sum(buf.data(), n, DType::F32);
    EXPECT_TRUE(buf == rank_order_sum(DType::F32, c->size(), n)) << n;
  }
}

TEST(CommunicatorMpi, RankOrderIsObservable) {
  // With 4 ranks, 1e8 + 1 - 1e8 + 1 is 1 in rank order and 0 in reverse order: the test above could
  // not pass with a different order of summation.
  auto c = make_mpi_world_communicator(opts());
  if (c->size() != 4) GTEST_SKIP() << "needs 4 ranks (has " << c->size() << ")";
  const float x[] = {1e8f, 1.0f, -1e8f, 1.0f};
  float v = x[c->rank()];
  c->all_reduce_sum(&v, 1, DType::F32);
  EXPECT_EQ(v, 1.0f);
}

TEST(CommunicatorMpi, AllReduceRefusesBytes) {
  auto c = make_mpi_world_communicator(opts());
  uint8_t b[3] = {1, 2, 3};
  EXPECT_THROW(c->all_reduce_sum(b, 3, DType::U8), Error);
}

TEST(CommunicatorMpi, AllGatherEveryDtypeOddSizes) {
  auto c = make_mpi_world_communicator(opts());
  const int R = c->size();
  for (DType dt : {DType::F32, DType::F16, DType::BF16, DType::I32, DType::I64, DType::U8}) {
    const size_t es = dtype_size(dt);
    for (size_t n : {size_t(0), size_t(1), size_t(3), size_t(7), size_t(1031)}) {
      std::vector<uint8_t> send(n * es), recv(n * es * R, 0xEE);
      for (size_t i = 0; i < send.size(); ++i) send[i] = static_cast<uint8_t>(c->rank() * 31 + i * 7);
      c->all_gather(send.data(), recv.data(), n, dt);
      for (int r = 0; r < R; ++r)
        for (size_t i = 0; i < n * es; ++i)
          ASSERT_EQ(recv[r * n * es + i], static_cast<uint8_t>(r * 31 + i * 7)) << dtype_name(dt) << " n=" << n;
      // In place: this rank's block already sits in recv.
      std::vector<uint8_t> inplace(n * es * R, 0);
      std::memcpy(inplace.data() + c->rank() * n * es, send.data(), n * es);
      c->all_gather(inplace.data() + c->rank() * n * es, inplace.data(), n, dt);
      EXPECT_TRUE(inplace == recv) << dtype_name(dt) << " n=" << n;
    }
  }
}

TEST(CommunicatorMpi, BroadcastFromEveryRootOddSizes) {
  auto c = make_mpi_world_communicator(opts());
  for (int root = 0; root < c->size(); ++root) {
    for (size_t bytes : {size_t(0), size_t(1), size_t(13), size_t((1 << 20) + 3)}) {
      std::vector<uint8_t> b(bytes);
      for (size_t i = 0; i < bytes; ++i) b[i] = static_cast<uint8_t>(c->rank() == root ? i * 13 + root : 0xAB);
      c->broadcast(b.data(), bytes, root);
      for (size_t i = 0; i < bytes; ++i) {
        ASSERT_EQ(b[i], static_cast<uint8_t>(i * 13 + root)) << "root " << root;
      }
    }
  }
  uint8_t x = 0;
  EXPECT_THROW(c->broadcast(&x, 1, c->size()), Error);
}

TEST(CommunicatorMpi, BarrierWaitsForTheSlowestRank) {
  auto c = make_mpi_world_communicator(opts());
  const auto t0 = std::chrono::steady_clock::now();
  if (c->rank() == c->size() - 1) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  c->barrier();
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (c->size() > 1) {
    EXPECT_GE(waited, 0.29);
  }
  EXPECT_GE(c->seconds_in_collectives(), c->rank() == c->size() - 1 || c->size() == 1 ? 0.0 : 0.25);
}

TEST(CommunicatorMpi, SplitMakesIndependentGroups) {
  auto world = make_mpi_world_communicator(opts());
  const int group = 2, color = world->rank() / group;
  auto g = world->split(color, world->rank());
  const int first = color * group, size = std::min(group, world->size() - first);
  EXPECT_EQ(g->size(), size);
  EXPECT_EQ(g->rank(), world->rank() - first);
  // The sum over the group only: world ranks first..first+size-1.
  int64_t v = int64_t(1) << world->rank();
  g->all_reduce_sum(&v, 1, DType::I64);
  int64_t want = 0;
  for (int r = first; r < first + size; ++r) want += int64_t(1) << r;
  EXPECT_EQ(v, want);
  // Reversed key order reverses the ranks.
  auto rev = world->split(0, -world->rank());
  EXPECT_EQ(rev->rank(), world->size() - 1 - world->rank());
}

TEST(CommunicatorMpi, WatchdogNamesTheCollectiveAndTheWait) {
  auto world = make_mpi_world_communicator(opts());
  if (world->size() < 2) GTEST_SKIP() << "needs 2 ranks";
  // A communicator with a short deadline (split inherits the options of its parent).
  auto quick_world = make_mpi_world_communicator(opts(0.5));
  auto quick = quick_world->split(0, quick_world->rank());
  if (quick->rank() == 0) {
    try {
      quick->barrier();  // the others arrive 3 s late
      ADD_FAILURE() << "the barrier did not time out";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("barrier"), std::string::npos) << m;
      EXPECT_NE(m.find("waited"), std::string::npos) << m;
      EXPECT_NE(m.find("SKV_COLLECTIVE_TIMEOUT"), std::string::npos) << m;
    }
  } else {
    std::this_thread::sleep_for(std::chrono::milliseconds(3000));  // past 0.5 s + the 1 s answer window
    quick->barrier();  // completes against rank 0's abandoned request
  }
  world->barrier();
}

// "rank 1" or "ranks 1, 3": the odd ranks of a job of n.
std::string odd_ranks(int n) {
  std::string s;
  for (int r = 1; r < n; r += 2) s += (s.empty() ? "" : ", ") + std::to_string(r);
  return (n > 3 ? "ranks " : "rank ") + s;
}

TEST(CommunicatorMpi, WatchdogNamesTheRanksThatNeverArrived) {
  auto world = make_mpi_world_communicator(opts());
  if (world->size() < 2) GTEST_SKIP() << "needs 2 ranks";
  auto quick_world = make_mpi_world_communicator(opts(0.5));
  auto quick = quick_world->split(0, quick_world->rank());
  if (quick->rank() % 2 == 0) {
    try {
      quick->barrier();  // the odd ranks sleep (as a stopped rank would) and answer nothing
      ADD_FAILURE() << "the barrier did not time out";
    } catch (const Error& e) {
      const std::string m = e.message();
      EXPECT_NE(m.find(odd_ranks(world->size()) + " never arrived"), std::string::npos) << m;
      EXPECT_NE(m.find("not answer"), std::string::npos) << m;
      EXPECT_NE(m.find(fmt::format("rank {} waited", world->rank())), std::string::npos) << m;
      EXPECT_EQ(m.find("rank 0 never"), std::string::npos) << m;  // the waiting ranks are not named missing
      EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    }
  } else {
    std::this_thread::sleep_for(std::chrono::milliseconds(4000));  // past 0.5 s + the 1 s answer window
    quick->barrier();  // completes against the even ranks' abandoned requests
  }
  world->barrier();
}

// The odd ranks wait in a barrier of another communicator that cannot complete until the even ones
// give up: they answer the questions (alive) but complete nothing, so the second round names them.
TEST(CommunicatorMpi, WatchdogTellsAStuckLiveRankFromASilentOne) {
  auto world = make_mpi_world_communicator(opts());
  if (world->size() < 2) GTEST_SKIP() << "needs 2 ranks";
  auto quick = make_mpi_world_communicator(opts(0.5))->split(0, world->rank());
  quick->barrier();  // collective #1 (after split's own) on every rank
  if (world->rank() % 2 == 0) {
    try {
      quick->barrier();  // the odd ranks are waiting in another communicator's barrier meanwhile
      ADD_FAILURE() << "the barrier did not time out";
    } catch (const Error& e) {
      const std::string m = e.message();
      EXPECT_NE(m.find(odd_ranks(world->size()) + " never arrived: "), std::string::npos) << m;
      EXPECT_NE(m.find("alive but completed nothing"), std::string::npos) << m;
      EXPECT_EQ(m.find("not answer"), std::string::npos) << m;
    }
  }
  world->barrier();  // the odd ranks wait here, answering the even ranks' questions, until they give up
}

}  // namespace skv
