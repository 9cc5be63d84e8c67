// test_util.h - small helpers shared by the unit tests: random tensors, max-abs comparison, and the
// message of the skv::Error a call throws.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <utility>
#include <random>
#include <vector>

#include "runtime/check.h"
#include "runtime/tensor.h"

namespace skv::test {

// The message of the skv::Error that f throws; "" when it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

inline Tensor randn(const Shape& s, uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  Tensor t = Tensor::empty(s);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = d(g);
  return t;
}

inline double max_abs_diff(const float* a, const float* b, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, static_cast<double>(std::fabs(a[i] - b[i])));
  return m;
}

inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.numel(), b.numel());
  return max_abs_diff(a.f32(), b.f32(), std::min(a.numel(), b.numel()));
}

inline double max_abs_diff(const Tensor& a, const std::vector<float>& b) {
  EXPECT_EQ(a.numel(), static_cast<int64_t>(b.size()));
  return max_abs_diff(a.f32(), b.data(), std::min<int64_t>(a.numel(), b.size()));
}

// Runs a shell command (stderr folded into stdout) and returns its output; *status is pclose's.
// The reference checks run Debian's PyTorch/numpy this way at test time.
inline std::string run_captured(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return *status = -1, out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  *status = ::pclose(p);
  return out;
}

// A raw little-endian float32 file (numpy's tofile); empty when it cannot be read.
inline std::vector<float> read_floats(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) return {};
  std::vector<float> v(static_cast<size_t>(f.tellg()) / sizeof(float));
  f.seekg(0);
  f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
  return v;
}

// How many floats differ bit for bit.
inline int64_t count_bit_differences(const float* a, const float* b, int64_t n) {
  int64_t d = 0;
  for (int64_t i = 0; i < n; ++i) d += std::memcmp(a + i, b + i, sizeof(float)) != 0;
  return d;
}

// A layer's store as the slot pool carves it when layers interleave: `n` extents of 1..4 tokens at
// increasing, non-adjacent starts inside a pool of `pool_slots` (CUDA kernels once held at most 8
// segments; the cache can hand them any number). Returns {start, len} pairs.
inline std::vector<std::pair<int64_t, int64_t>> scattered_extents(int n, int64_t pool_slots, uint32_t seed) {
  std::mt19937 g(seed);
  std::vector<std::pair<int64_t, int64_t>> ext;
  int64_t at = 0;
  for (int i = 0; i < n; ++i) {
    at += 1 + static_cast<int64_t>(g() % 3);  // a gap: another layer's extent
    const int64_t len = 1 + static_cast<int64_t>(g() % 4);
    ext.emplace_back(at, len);
    at += len;
  }
  EXPECT_LE(at, pool_slots) << "scattered_extents: pool too small";
  return ext;
}

// The tokens of `ext` in [R, H, S, D] copied out contiguously: [R, H, sum(len), D].
inline Tensor gather_extents(const Tensor& pool, const std::vector<std::pair<int64_t, int64_t>>& ext) {
  const int64_t R = pool.dim(0), H = pool.dim(1), S = pool.dim(2), D = pool.dim(3);
  int64_t L = 0;
  for (const auto& e : ext) L += e.second;
  Tensor out = Tensor::empty({R, H, L, D});
  for (int64_t rh = 0; rh < R * H; ++rh) {
    int64_t j = 0;
    for (const auto& [start, len] : ext)
      for (int64_t t = 0; t < len; ++t, ++j)
        std::copy_n(pool.f32() + (rh * S + start + t) * D, D, out.f32() + (rh * L + j) * D);
  }
  return out;
}

}  // namespace skv::test
