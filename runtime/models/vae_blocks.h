// vae_blocks.h - convolutional building blocks shared by the VQ-VAE (VAR) and BSQ-VAE (Infinity)
// decoders: Conv2d, GroupNorm(32, eps 1e-6), ResnetBlock and the single-head spatial AttnBlock, as
// in the taming/VAR `basic_vae.py`. The two checkpoints spell keys differently (VAR: `conv1.weight`;
// Infinity: `conv1.conv.weight`, `norm1.norm.weight`), so a KeyStyle maps the names.
#pragma once

#include <string>
#include <vector>

#include "runtime/models/weights.h"

namespace skv {

struct KeyStyle {
  std::string conv;  // suffix inside a conv module: "" (VAR) or ".conv" (Infinity)
  std::string norm;  // suffix inside a norm module: "" (VAR) or ".norm" (Infinity)
};

struct Conv2d {
  Tensor w, b;
  int in = 0, out = 0, k = 3, pad = 1, stride = 1;
  // Loads `<prefix><style.conv>.weight` [out, in, k, k] and `.bias`.
  void load(const WeightLoader& wl, const std::string& prefix, const KeyStyle& style, int in_ch, int out_ch, int ks,
            int stride = 1, int pad = -1);
  Tensor forward(Backend& be, const Tensor& x) const;
};

// GroupNorm(32 groups, eps 1e-6); 24 groups when the channels do not divide by 32 (the BSQ-VAE's
// Normalize rule; VAR configs always divide by 32). torch_threads > 0: PyTorch 1.13's channels-last
// CPU kernel with that many torch threads instead of the backend's exact GroupNorm (golden checks of
// CPU-made goldens only; runtime/models/torch_group_norm.h).
struct GroupNorm32 {
  Tensor w, b;
  int channels = 0, groups = 32;
  void load(const WeightLoader& wl, const std::string& prefix, const KeyStyle& style, int ch);
  Tensor forward(Backend& be, const Tensor& x, bool then_silu, int torch_threads = 0) const;
};

struct ResnetBlock {
  GroupNorm32 norm1, norm2;
  Conv2d conv1, conv2, nin_shortcut;
  bool has_shortcut = false;
  void load(const WeightLoader& wl, const std::string& prefix, const KeyStyle& style, int in_ch, int out_ch);
  Tensor forward(Backend& be, const Tensor& x, int torch_gn_threads = 0) const;  // see GroupNorm32
};

struct AttnBlock {
  GroupNorm32 norm;
  Conv2d qkv, proj_out;
  int channels = 0;
  void load(const WeightLoader& wl, const std::string& prefix, const KeyStyle& style, int ch);
  Tensor forward(Backend& be, const Tensor& x) const;
};

// Nearest 2x upsampling followed by a 3x3 conv (Upsample2x).
struct Upsample2x {
  Conv2d conv;
  void load(const WeightLoader& wl, const std::string& prefix, const KeyStyle& style, int ch);
  Tensor forward(Backend& be, const Tensor& x) const;
};

}  // namespace skv
