// image_metrics.h - PSNR and SSIM of 8-bit RGB images (the fidelity benchmark compares compressed-cache
// images with full-cache images). SSIM is Wang et al. 2004 as scikit-image computes it with
// gaussian_weights=True: an 11x11 Gaussian window (sigma 1.5) over the valid region, K1 = 0.01,
// K2 = 0.03, data range 255, sample covariances, averaged over the three channels.
#pragma once

#include <cstdint>
#include <vector>

namespace skv {

// PSNR in dB of two w x h RGB images (w * h * 3 bytes); +inf when identical.
double psnr_rgb8(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b);
// Mean SSIM over channels; images smaller than the window use the largest odd window that fits.
double ssim_rgb8(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b, int w, int h);

}  // namespace skv
