// BSQ-VAE inference half: bits -> l2-normalised codes (+-1/sqrt(d)), the trilinear (t = 1) resampling
// of the summed codes equals bilinear resampling of the same map, the decoder's shape and range, and
// the 24-group GroupNorm rule for channel counts not divisible by 32.
#include <gtest/gtest.h>

#include <cmath>

#include "runtime/models/bsq_vae.h"
#include "test_util.h"
#include "models/infinity_test_util.h"

namespace skv {

TEST(BsqVae, BitsToCodesAreSignedUnitCodes) {
  const InfinityConfig cfg = test::tiny_infinity_config();
  WeightLoader wl(5, cpu_backend());
  BsqVae vae(cfg, wl);
  const int B = 2, h = 3, w = 2, d = cfg.vae.codebook_dim;
  std::vector<uint8_t> bits(B * h * w * d);
  std::mt19937 g(1);
  for (auto& b : bits) b = static_cast<uint8_t>(g() & 1);
  const Tensor c = vae.bits_to_codes(bits, B, h, w);
  ASSERT_EQ(c.shape(), Shape({B, d, h, w}));
  const float s = 1.0f / std::sqrt(static_cast<float>(d));
  for (int b = 0; b < B; ++b)
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int j = 0; j < d; ++j) {
          const float want = bits[((b * h + y) * w + x) * d + j] ? s : -s;
          EXPECT_NEAR(c.f32()[((b * d + j) * h + y) * w + x], want, 1e-7f);
        }
}

TEST(BsqVae, AccumulateAndResampleFollowTheInterpolationMode) {
  const InfinityConfig cfg = test::tiny_infinity_config();
  WeightLoader wl(5, cpu_backend());
  BsqVae vae(cfg, wl);
  Backend& be = cpu_backend();
  const int d = cfg.vae.codebook_dim;
  Tensor codes = test::randn({1, d, 3, 3}, 2);
  Tensor summed = be.zeros({1, d, 8, 8});
  vae.accumulate(summed, codes);
  Tensor ref = be.empty({1, d, 8, 8});
  be.interpolate(codes, Interp::Bilinear, ref);  // trilinear with t = 1 is bilinear
  EXPECT_LT(test::max_abs_diff(summed, ref), 1e-6);
  const Tensor before = summed.clone();
  vae.accumulate(summed, ref);  // same size: added as is
  for (int64_t i = 0; i < ref.numel(); ++i) EXPECT_EQ(summed.f32()[i], before.f32()[i] + ref.f32()[i]);
  const Tensor down = vae.resample(summed, 5, 4);
  Tensor ref2 = be.empty({1, d, 5, 4});
  be.interpolate(summed, Interp::Bilinear, ref2);
  EXPECT_EQ(down.shape(), Shape({1, d, 5, 4}));
  EXPECT_LT(test::max_abs_diff(down, ref2), 1e-6);
}

TEST(BsqVae, DecoderShapeRangeAndGroupRule) {
  InfinityConfig cfg = test::tiny_infinity_config();
  for (int base : {32, 24}) {
    cfg.vae.base_ch = base;  // 24: channels 24, 24, 48 -> GroupNorm with 24 groups
    WeightLoader wl(7, cpu_backend());
    BsqVae vae(cfg, wl);
    const Tensor z = test::randn({2, cfg.vae.codebook_dim, 3, 5}, 3, 0.2f);
    const Tensor img = vae.decode(z);
    ASSERT_EQ(img.shape(), Shape({2, 3, 3 * cfg.vae.patch_size, 5 * cfg.vae.patch_size}));
    for (int64_t i = 0; i < img.numel(); ++i) ASSERT_TRUE(img.f32()[i] >= -1.0f && img.f32()[i] <= 1.0f);
  }
}

}  // namespace skv
