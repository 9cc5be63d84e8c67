#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "runtime/hostdevice.h"
#include "runtime/rng.h"

namespace skv {

TEST(HostDevice, HalfRoundTripsEveryFiniteValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_f16(f), h) << "half bits " << h;
  }
}

TEST(HostDevice, HalfKnownValues) {
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);           // rounds to inf
  EXPECT_EQ(f32_to_f16(1.0f + 1.0f / 2048), 0x3c00);  // tie -> even
  EXPECT_EQ(f32_to_f16(1.0f + 3.0f / 2048), 0x3c02);  // tie -> even (up)
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(NAN))));
}

TEST(HostDevice, BFloat16RoundsToNearestEven) {
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f)), 1.0f);
  float x;
  uint32_t u = 0x3f808000u;  // exactly half-way between two bf16 values, even below
  std::memcpy(&x, &u, 4);
  EXPECT_EQ(f32_to_bf16(x), 0x3f80);
  u = 0x3f818000u;  // half-way, odd below -> rounds up
  std::memcpy(&x, &u, 4);
  EXPECT_EQ(f32_to_bf16(x), 0x3f82);
  for (uint32_t h = 0; h < 65536; h += 7) {
    const float f = bf16_to_f32(static_cast<uint16_t>(h));
    if (!std::isnan(f)) ASSERT_EQ(f32_to_bf16(f), h);
  }
}

TEST(HostDevice, GeluTanhMatchesFormula) {
  for (float x : {-4.0f, -1.0f, -0.1f, 0.0f, 0.5f, 2.0f, 6.0f}) {
    const double ref = 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
    EXPECT_NEAR(gelu_tanh(x), ref, 1e-6);
  }
  EXPECT_NEAR(silu(1.0f), 1.0 / (1 + std::exp(-1.0)), 1e-7);
}

TEST(HostDevice, CubicWeightsSumToOneAndInterpolate) {
  for (float t : {0.0f, 0.25f, 0.5f, 0.9f}) {
    float w[4];
    cubic_weights(t, w);
    EXPECT_NEAR(w[0] + w[1] + w[2] + w[3], 1.0f, 1e-6);
  }
  float w[4];
  cubic_weights(0.0f, w);
  EXPECT_FLOAT_EQ(w[1], 1.0f);
  EXPECT_FLOAT_EQ(w[0], 0.0f);
}

TEST(Rng, PhiloxIsAPureFunctionOfItsCounter) {
  const float a = uniform01(7, 1, 2, 3, 0), b = uniform01(7, 1, 2, 3, 0);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, uniform01(7, 1, 2, 4, 0));
  EXPECT_NE(a, uniform01(8, 1, 2, 3, 0));
  // roughly uniform
  double sum = 0;
  for (uint32_t i = 0; i < 10000; ++i) {
    const float u = uniform01(1, i, 0, 0, 0);
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    sum += u;
  }
  EXPECT_NEAR(sum / 10000, 0.5, 0.02);
}

}  // namespace skv
