#include "runtime/allocator.h"

#include <fmt/format.h>

#include <cstdlib>
#include <new>

#include "runtime/check.h"

namespace skv {

const char* mem_category_name(MemCategory c) {
  switch (c) {
    case MemCategory::Weights: return "weights";
    case MemCategory::KV: return "kv";
    case MemCategory::Activations: return "activations";
    case MemCategory::Workspace: return "workspace";
  }
  return "?";
}

namespace {

void atomic_max(std::atomic<int64_t>& a, int64_t v) {
  int64_t prev = a.load(std::memory_order_relaxed);
  while (prev < v && !a.compare_exchange_weak(prev, v, std::memory_order_relaxed)) {
  }
}

class HostAllocator final : public Allocator {
 public:
  const char* name() const override { return "host"; }

 protected:
  void* raw_allocate(size_t bytes) override {
    const size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
    SKV_CHECK(p != nullptr, "out of host memory allocating {}", format_bytes(static_cast<int64_t>(bytes)));
    return p;
  }
  void raw_deallocate(void* p) override { std::free(p); }
};

}  // namespace

void Allocator::add(int64_t bytes, MemCategory cat) {
  const int i = static_cast<int>(cat);
  const int64_t now = current_[i].fetch_add(bytes, std::memory_order_relaxed) + bytes;
  atomic_max(peak_[i], now);
  const int64_t total = total_current_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  atomic_max(total_peak_, total);
}

void* Allocator::allocate(size_t bytes, MemCategory cat) {
  void* p = raw_allocate(bytes);
  add(static_cast<int64_t>(bytes), cat);
  return p;
}

void Allocator::deallocate(void* p, size_t bytes, MemCategory cat) {
  if (p == nullptr) return;
  raw_deallocate(p);
  add(-static_cast<int64_t>(bytes), cat);
}

void Allocator::account(int64_t bytes, MemCategory cat) { add(bytes, cat); }

MemStats Allocator::stats() const {
  MemStats s;
  for (int i = 0; i < kNumMemCategories; ++i) {
    s.current[i] = current_[i].load();
    s.peak[i] = peak_[i].load();
  }
  s.total_current = total_current_.load();
  s.total_peak = total_peak_.load();
  return s;
}

void Allocator::reset_peaks() {
  for (int i = 0; i < kNumMemCategories; ++i) peak_[i].store(current_[i].load());
  total_peak_.store(total_current_.load());
}

Allocator& Allocator::host() {
  static HostAllocator a;
  return a;
}

std::string format_bytes(int64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (bytes < 0) return "-" + format_bytes(-bytes);
  if (b < 1024.0) return fmt::format("{} B", bytes);
  if (b < 1024.0 * 1024) return fmt::format("{:.2f} KiB", b / 1024);
  if (b < 1024.0 * 1024 * 1024) return fmt::format("{:.2f} MiB", b / (1024.0 * 1024));
  return fmt::format("{:.2f} GiB", b / (1024.0 * 1024 * 1024));
}

}  // namespace skv
