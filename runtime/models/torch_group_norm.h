// torch_group_norm.h - PyTorch 1.13's CPU GroupNorm kernel for a channels-last float32 input,
// reproduced bit for bit (Debian's python3-torch 1.13.1, AVX2 build), for golden checks only.
//
// Why: the official BSQ-VAE decoder input is channels-last (the summed codes are a permuted view),
// so every GroupNorm of the official decoder runs aten/src/ATen/native/cpu/group_norm_kernel.cpp's
// GroupNormKernelImplChannelsLastInternal. It computes mean and variance as float32 sums of x and x^2
// and var = E[x^2] - mean^2, i.e. ~1e-3 away from the exact statistics on 1M-position maps, and for
// maps of >= 1024 positions the sums depend on torch's thread count. The decoded image of a golden
// made on CPU carries that (up to 2 levels of image_u8). Normal generation uses the backend's exact
// group_norm; this is selected only by BsqVae::set_torch_group_norm_threads (verify-golden).
//
// The arithmetic (T = at::get_num_threads(), FMA = the AVX2 build's contracted x * y + z):
//  * HxW < 1024 ("impl-1", thread-independent): per (n, g) two Vectorized<float> accumulators over
//    the group's D channels (lane = d % 8, the tail loaded with zeros), positions in order:
//    acc0 += x, acc1 = FMA(x, x, acc1); then vec_reduce_all = lane 0 + lane 1 + ... + lane 7 in order.
//  * HxW >= 1024 ("impl-2"): at::parallel_for(0, N * HxW, 1) splits the positions into T contiguous
//    chunks of ceil(N * HxW / T) (OpenMP: thread t takes [t * chunk, (t + 1) * chunk)); each thread
//    accumulates per channel into its own zeroed float buffer {N, 2C} (sum += x, sumsq = FMA(x, x, sumsq),
//    positions in order); then per (n, g): for d in D, for t in T: mean += buf[t][n][g D + d] (same for
//    sumsq), all T buffers (zeros of idle threads included).
//  * then mean *= s with s = 1.0f / float(D * HxW); var = FMA(sumsq, s, -(mean * mean)) clamped at 0;
//    rstd = 1.0f / sqrtf(var + eps) (float eps); scale = rstd * gamma[c];
//    bias = FMA(-scale, mean, beta[c]); y = FMA(x, scale, bias).
// Verified bit for bit against /usr/bin/python3's torch with set_num_threads 1..4, N 1..3, D 1..20,
// both branches (tests/models/test_torch_group_norm.cpp). Not covered: HxW == 1 (a [N, C, 1, 1]
// tensor is also contiguous, and torch then runs its contiguous kernel instead).
#pragma once

#include <cstdint>

#include "runtime/backend.h"
#include "runtime/tensor.h"

namespace skv {

// x, y: [N, C, HxW] float32 in NCHW order (the channels-last layout is only what torch read; the
// arithmetic does not depend on where the values live). gamma / beta may be null (1 / 0). y must not
// alias x. torch_threads >= 1.
void torch_group_norm_channels_last(const float* x, int64_t N, int64_t C, int64_t HxW, int64_t groups,
                                    const float* gamma, const float* beta, float eps, int torch_threads, float* y);

// The same on a backend tensor x [N, C, H, W] (downloaded and the result uploaded on a device backend);
// returns y on x's backend.
Tensor torch_group_norm(Backend& be, const Tensor& x, int groups, const Tensor* w, const Tensor* b, float eps,
                        int torch_threads);

}  // namespace skv
