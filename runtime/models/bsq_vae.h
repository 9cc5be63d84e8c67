// bsq_vae.h - the inference half of Infinity's BSQ-VAE (FoundationVision/Infinity
// infinity/models/bsq_vae/: multiscale_bsq.py BSQ.indices_to_codes, flux_vqgan.py Decoder): bits ->
// codes -> summed codes -> image. A code is l2norm((2 bit - 1) / sqrt(d)); the summed codes live on the
// final VAE grid and every scale's codes are resampled onto it with the quantizer's interpolation mode
// (trilinear with t = 1 for the released models), exactly as autoregressive_infer_cfg does. The
// decoder is the flux-style CNN (no attention blocks), keys as in the official state dict
// (`decoder.up.<level>.block.<i>.conv1.conv.weight`, `...norm1.norm.weight`).
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/models/infinity_config.h"
#include "runtime/models/vae_blocks.h"

namespace skv {

class BsqVae {
 public:
  BsqVae(const InfinityConfig& cfg, const WeightLoader& wl);
  BsqVae(const InfinityConfig& cfg, const SafeTensors& st, Backend& be)
      : BsqVae(cfg, WeightLoader(st, be, "VAE of config " + cfg.path)) {}

  Backend& backend() const { return be_; }
  int codebook_dim() const { return cfg_.vae.codebook_dim; }

  // bits [B, h, w, d] (0/1, row-major) -> codes [B, d, h, w] on the backend.
  Tensor bits_to_codes(const std::vector<uint8_t>& bits, int B, int h, int w) const;
  // summed [B, d, H, W] += codes resampled to (H, W) (added as is when the sizes already match, as the
  // official loop does at the last scale).
  void accumulate(Tensor& summed, const Tensor& codes) const;
  // The summed codes resampled to (h, w): the next scale's input, [B, d, h, w].
  Tensor resample(const Tensor& summed, int h, int w) const;
  // summed [B, d, H, W] -> decoder output clamped to [-1, 1], [B, 3, H * patch, W * patch] (host).
  Tensor decode(const Tensor& summed) const;

  // n > 0: the decoder's GroupNorms reproduce PyTorch 1.13's channels-last CPU kernel as run with n
  // torch threads (runtime/models/torch_group_norm.h), so that an image decoded from a golden's codes
  // matches the official CPU run that made it (the config's `torch_num_threads`). 0 (the default, for
  // generation): the backend's exact GroupNorm.
  void set_torch_group_norm_threads(int n);
  int torch_group_norm_threads() const { return torch_gn_threads_; }

 private:
  void interp(const Tensor& x, Tensor& y) const;  // x [B, d, h, w] -> y [B, d, h', w'] with the VAE's mode
  const InfinityConfig& cfg_;
  Backend& be_;
  Interp mode_ = Interp::Trilinear;
  Conv2d conv_in_, conv_out_;
  ResnetBlock mid_block_1_, mid_block_2_;
  struct Level {
    std::vector<ResnetBlock> blocks;
    bool has_upsample = false;
    Upsample2x upsample;
  };
  std::vector<Level> up_;  // index = level
  GroupNorm32 norm_out_;
  int torch_gn_threads_ = 0;
};

}  // namespace skv
