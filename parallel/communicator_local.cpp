// communicator_local.cpp - the one-rank communicator (collectives are identities) and what every
// backend shares: the default split, the watchdog options from the environment, the record of the
// collectives' gaps and waits.
#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <cstring>

#include "parallel/communicator.h"
#include "runtime/check.h"

namespace skv {

namespace {

class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "local"; }
  void all_reduce_sum(void*, size_t count, DType dt) override {
    bytes_all_reduced_ += static_cast<int64_t>(count * dtype_size(dt));
  }
  void all_gather(const void* send, void* recv, size_t count, DType dt) override {
    if (send != recv && count) std::memcpy(recv, send, count * dtype_size(dt));
  }
  void broadcast(void*, size_t, int root) override {
    SKV_CHECK(root == 0, "broadcast root {} outside a communicator of 1 rank", root);
  }
  void barrier() override {}
  std::unique_ptr<Communicator> split(int, int) override { return std::make_unique<LocalCommunicator>(); }
};

}  // namespace

std::unique_ptr<Communicator> Communicator::split(int, int) {
  SKV_FAIL("the {} communicator cannot be split into groups", name());
}

void Communicator::all_reduce_tensor(Tensor& t) { all_reduce_sum(t.raw(), static_cast<size_t>(t.numel()), t.dtype()); }

void Communicator::all_reduce_sum_host(void* buf, size_t count, DType dt) {
  SKV_CHECK(!device_buffers(), "the {} communicator takes device buffers and cannot reduce host memory", name());
  all_reduce_sum(buf, count, dt);
}

void Communicator::broadcast_host(void* buf, size_t bytes, int root) {
  SKV_CHECK(!device_buffers(), "the {} communicator takes device buffers and cannot broadcast host memory", name());
  broadcast(buf, bytes, root);
}

CollectiveOptions collective_options_from_env() {
  CollectiveOptions o;
  if (const char* v = std::getenv("SKV_COLLECTIVE_TIMEOUT"); v && *v) {
    char* end = nullptr;
    const double t = std::strtod(v, &end);
    SKV_CHECK(end && *end == '\0' && t >= 0, "SKV_COLLECTIVE_TIMEOUT='{}' must be a number of seconds (0 = no watchdog)",
              v);
    o.timeout_s = t;
  }
  return o;
}

namespace {

CollectiveStats g_stats;
double g_last_end = -1;    // when the last collective ended (-1: none yet)
double g_last_answer = -1; // when this rank last could answer a question (a collective or a keepalive)

double stats_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void note_answer_point(double now, const char* what, int64_t seq) {
  if (g_last_answer >= 0 && now - g_last_answer > g_stats.longest_silence_s) {
    g_stats.longest_silence_s = now - g_last_answer;
    g_stats.silence_before = seq < 0 ? std::string(what) : fmt::format("{} #{}", what, seq);
  }
  g_last_answer = now;
}

}  // namespace

const CollectiveStats& collective_stats() { return g_stats; }

void note_keepalive() { note_answer_point(stats_now(), "a keepalive point", -1); }

void note_collective_begin(const char* what, int64_t seq) {
  ++g_stats.calls;
  note_answer_point(stats_now(), what, seq);
  if (g_last_end < 0) return;
  const double gap = stats_now() - g_last_end;
  if (gap > g_stats.longest_gap_s) {
    g_stats.longest_gap_s = gap;
    g_stats.gap_before = fmt::format("{} #{}", what, seq);
  }
}

void note_collective_end() {
  g_last_end = stats_now();
  g_last_answer = g_last_end;
}

void note_collective_wait(double seconds, const char* what, int64_t seq) {
  if (seconds <= g_stats.longest_wait_s) return;
  g_stats.longest_wait_s = seconds;
  g_stats.wait_in = fmt::format("{} #{}", what, seq);
}

bool collective_stats_wanted() {
  const char* v = std::getenv("SKV_COLLECTIVE_STATS");
  return v && std::strcmp(v, "1") == 0;
}

std::string collective_stats_line(int world_rank) {
  const CollectiveStats& s = g_stats;
  return fmt::format("collectives on rank {}: {} calls; longest gap between two {:.3f} s (before {}); longest wait in "
                     "one {:.3f} s ({}); longest time unable to answer the watchdog {:.3f} s (before {}); watchdog {} s "
                     "(SKV_COLLECTIVE_TIMEOUT)",
                     world_rank, s.calls, s.longest_gap_s, s.gap_before.empty() ? "-" : s.gap_before, s.longest_wait_s,
                     s.wait_in.empty() ? "-" : s.wait_in, s.longest_silence_s,
                     s.silence_before.empty() ? "-" : s.silence_before, collective_options_from_env().timeout_s);
}

std::unique_ptr<Communicator> make_local_communicator() { return std::make_unique<LocalCommunicator>(); }

}  // namespace skv
