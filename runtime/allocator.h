// allocator.h - accounting allocator: every byte scalekv allocates has a category.
// The planner predicts KV bytes, and the runtime must prove it: each Allocator (one for host memory,
// one per CUDA device) keeps current and peak bytes per category (weights, kv, activations,
// workspace) and for all categories together. Peaks can be reset between phases (e.g. per request).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace skv {

enum class MemCategory : int { Weights = 0, KV = 1, Activations = 2, Workspace = 3 };
constexpr int kNumMemCategories = 4;
const char* mem_category_name(MemCategory c);

struct MemStats {
  std::array<int64_t, kNumMemCategories> current{};
  std::array<int64_t, kNumMemCategories> peak{};
  int64_t total_current = 0;
  int64_t total_peak = 0;
  int64_t cur(MemCategory c) const { return current[static_cast<int>(c)]; }
  int64_t pk(MemCategory c) const { return peak[static_cast<int>(c)]; }
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  void* allocate(size_t bytes, MemCategory cat);
  void deallocate(void* p, size_t bytes, MemCategory cat);
  // Memory that is not allocated here (e.g. pages read from a memory-mapped file) but is resident
  // for the process; counted like an allocation of that category.
  void account(int64_t bytes, MemCategory cat);
  MemStats stats() const;
  void reset_peaks();  // peaks := current
  virtual const char* name() const = 0;

  static Allocator& host();

 protected:
  virtual void* raw_allocate(size_t bytes) = 0;
  virtual void raw_deallocate(void* p) = 0;

 private:
  void add(int64_t bytes, MemCategory cat);
  std::array<std::atomic<int64_t>, kNumMemCategories> current_{};
  std::array<std::atomic<int64_t>, kNumMemCategories> peak_{};
  std::atomic<int64_t> total_current_{0};
  std::atomic<int64_t> total_peak_{0};
};

std::string format_bytes(int64_t bytes);  // "1.23 MiB"

}  // namespace skv
