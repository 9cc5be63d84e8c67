// image_metrics.cpp - PSNR and SSIM (see image_metrics.h).
#include "launcher/image_metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "runtime/check.h"

namespace skv {

double psnr_rgb8(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  SKV_CHECK(a.size() == b.size() && !a.empty(), "PSNR of images of {} and {} bytes", a.size(), b.size());
  double se = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    se += d * d;
  }
  const double mse = se / static_cast<double>(a.size());
  return mse == 0 ? std::numeric_limits<double>::infinity() : 10.0 * std::log10(255.0 * 255.0 / mse);
}

double ssim_rgb8(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b, int w, int h) {
  SKV_CHECK(a.size() == b.size() && a.size() == static_cast<size_t>(w) * h * 3 && w > 0 && h > 0,
            "SSIM of images of {} and {} bytes for {}x{}", a.size(), b.size(), w, h);
  int win = std::min({11, w, h});
  if (win % 2 == 0) --win;
  const double sigma = 1.5;
  std::vector<double> g(win);
  double gs = 0;
  for (int i = 0; i < win; ++i) gs += g[i] = std::exp(-0.5 * std::pow((i - win / 2) / sigma, 2));
  for (double& x : g) x /= gs;
  const double L = 255.0, C1 = (0.01 * L) * (0.01 * L), C2 = (0.03 * L) * (0.03 * L);
  const double cov_norm = win > 1 ? static_cast<double>(win * win) / (win * win - 1) : 1.0;  // sample covariance
  double total = 0;
  int64_t count = 0;
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y + win <= h; ++y)
      for (int x = 0; x + win <= w; ++x) {
        double ma = 0, mb = 0, aa = 0, bb = 0, ab = 0;
        for (int i = 0; i < win; ++i)
          for (int j = 0; j < win; ++j) {
            const double wt = g[i] * g[j];
            const double va = a[((y + i) * w + (x + j)) * 3 + c], vb = b[((y + i) * w + (x + j)) * 3 + c];
            ma += wt * va;
            mb += wt * vb;
            aa += wt * va * va;
            bb += wt * vb * vb;
            ab += wt * va * vb;
          }
        const double va = cov_norm * (aa - ma * ma), vb = cov_norm * (bb - mb * mb), cab = cov_norm * (ab - ma * mb);
        total += ((2 * ma * mb + C1) * (2 * cab + C2)) / ((ma * ma + mb * mb + C1) * (va + vb + C2));
        ++count;
      }
  return total / static_cast<double>(count);
}

}  // namespace skv
