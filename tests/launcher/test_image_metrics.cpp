// PSNR and SSIM against hand-computed values and their defining properties.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "launcher/image_metrics.h"
#include "runtime/check.h"

namespace skv {

TEST(ImageMetrics, PsnrOfAKnownError) {
  std::vector<uint8_t> a(4 * 4 * 3, 100), b(a);
  EXPECT_TRUE(std::isinf(psnr_rgb8(a, b)));
  for (size_t i = 0; i < b.size(); i += 2) b[i] = 110;  // half the samples off by 10: MSE 50
  EXPECT_NEAR(psnr_rgb8(a, b), 10 * std::log10(255.0 * 255.0 / 50.0), 1e-9);
  EXPECT_THROW(psnr_rgb8(a, std::vector<uint8_t>(3)), Error);
}

TEST(ImageMetrics, SsimIsOneForEqualImagesAndFallsWithNoise) {
  const int w = 32, h = 24;
  std::mt19937 g(1);
  std::vector<uint8_t> a(w * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) a[(y * w + x) * 3 + c] = static_cast<uint8_t>((x * 7 + y * 5 + c * 40) % 256);
  EXPECT_NEAR(ssim_rgb8(a, a, w, h), 1.0, 1e-12);
  auto noisy = [&](int amp) {
    std::vector<uint8_t> b(a);
    for (auto& v : b) v = static_cast<uint8_t>(std::clamp(static_cast<int>(v) + static_cast<int>(g() % (2 * amp + 1)) - amp, 0, 255));
    return b;
  };
  const double s5 = ssim_rgb8(a, noisy(5), w, h), s40 = ssim_rgb8(a, noisy(40), w, h);
  EXPECT_LT(s5, 1.0);
  EXPECT_GT(s5, s40);
  EXPECT_GT(s40, -1.0);
  // a constant offset keeps structure: SSIM stays high, PSNR drops
  std::vector<uint8_t> off(a);
  for (auto& v : off) v = static_cast<uint8_t>(std::min(255, v + 3));
  EXPECT_GT(ssim_rgb8(a, off, w, h), 0.98);
  // two flat images of different level: luminance term only, (2*100*120 + C1) / (100^2 + 120^2 + C1)
  std::vector<uint8_t> f1(11 * 11 * 3, 100), f2(11 * 11 * 3, 120);
  const double C1 = 6.5025;
  EXPECT_NEAR(ssim_rgb8(f1, f2, 11, 11), (2 * 100.0 * 120 + C1) / (100.0 * 100 + 120.0 * 120 + C1), 1e-9);
}

}  // namespace skv
