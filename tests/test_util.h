// test_util.h - small helpers shared by the unit tests: random tensors, max-abs comparison, and the
// message of the skv::Error a call throws.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
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

}  // namespace skv::test
