// vqvae.h - the multi-scale VQ-VAE of VAR (FoundationVision/VAR models/vqvae.py, quant.py), inference
// half: codebook lookup, the residual accumulation f_hat += phi_k(bicubic-up(embedding(idx_k))), the
// next-scale input area-down(f_hat), and the decoder image = decoder(post_quant_conv(f_hat)).
// phi_k is one of `share_quant_resi` shared 3x3 convs blended 0.5 x + 0.5 conv(x), chosen by the
// nearest tick of linspace (the official PhiPartiallyShared / PhiShared / PhiNonShared rules).
#pragma once

#include <vector>

#include "runtime/models/vae_blocks.h"
#include "runtime/models/var_config.h"

namespace skv {

class VQVAE {
 public:
  VQVAE(const VarConfig& cfg, const WeightLoader& wl);
  VQVAE(const VarConfig& cfg, const SafeTensors& st, Backend& be) : VQVAE(cfg, WeightLoader(st, be, "config " + cfg.path)) {}

  // idx [B * pn * pn] (row-major per image) -> [B, Cvae, pn, pn]
  Tensor lookup(const std::vector<int64_t>& idx, int B, int pn) const;
  // f_hat += phi(up(h)) for scale si; returns the next scale's input [B, Cvae, pn', pn'] (or f_hat
  // itself after the last scale).
  Tensor add_scale(int si, Tensor& f_hat, const Tensor& h_BChw) const;
  // f_hat [B, Cvae, H, W] -> image [B, 3, H*down, W*down] in [0, 1]
  Tensor decode(const Tensor& f_hat) const;
  int phi_index(int si) const;  // which phi conv scale si uses
  const Tensor& codebook() const { return embedding_; }

 private:
  const VarConfig& cfg_;
  Backend& be_;
  Tensor embedding_;             // [V, Cvae]
  std::vector<Conv2d> phi_;      // quant_resi convs
  std::vector<double> ticks_;
  Conv2d post_quant_conv_;
  // decoder
  Conv2d conv_in_, conv_out_;
  ResnetBlock mid_block_1_, mid_block_2_;
  AttnBlock mid_attn_;
  struct Level {
    std::vector<ResnetBlock> blocks;
    std::vector<AttnBlock> attn;
    bool has_upsample = false;
    Upsample2x upsample;
  };
  std::vector<Level> up_;  // index = i_level
  GroupNorm32 norm_out_;
};

}  // namespace skv
