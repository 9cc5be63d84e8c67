#include "runtime/models/vae_blocks.h"

#include <cmath>

#include "parallel/communicator.h"
#include "runtime/models/torch_group_norm.h"

namespace skv {

void Conv2d::load(const WeightLoader& wl, const std::string& prefix, const KeyStyle& style, int in_ch, int out_ch,
                  int ks, int stride_, int pad_) {
  in = in_ch;
  out = out_ch;
  k = ks;
  stride = stride_;
  pad = pad_ < 0 ? ks / 2 : pad_;
  w = wl.get(prefix + style.conv + ".weight", {out_ch, in_ch, ks, ks});
  b = wl.get(prefix + style.conv + ".bias", {out_ch});
}

Tensor Conv2d::forward(Backend& be, const Tensor& x) const {
  collective_keepalive();  // one 512x512 conv of a decoder takes seconds on a CPU: waiting ranks hear it lives
  const int64_t H = x.dim(2), W = x.dim(3);
  Tensor y = be.empty({x.dim(0), out, (H + 2 * pad - k) / stride + 1, (W + 2 * pad - k) / stride + 1});
  be.conv2d(x, w, &b, stride, pad, y);
  return y;
}

void GroupNorm32::load(const WeightLoader& wl, const std::string& prefix, const KeyStyle& style, int ch) {
  channels = ch;
  groups = ch % 32 == 0 ? 32 : 24;
  w = wl.get(prefix + style.norm + ".weight", {ch});
  b = wl.get(prefix + style.norm + ".bias", {ch});
}

Tensor GroupNorm32::forward(Backend& be, const Tensor& x, bool then_silu, int torch_threads) const {
  Tensor y;
  if (torch_threads > 0) {
    y = torch_group_norm(be, x, groups, &w, &b, 1e-6f, torch_threads);
  } else {
    y = be.empty(x.shape());
    be.group_norm(x, groups, &w, &b, 1e-6f, y);
  }
  if (then_silu) be.silu(y, y);
  return y;
}

void ResnetBlock::load(const WeightLoader& wl, const std::string& prefix, const KeyStyle& style, int in_ch,
                       int out_ch) {
  norm1.load(wl, prefix + ".norm1", style, in_ch);
  conv1.load(wl, prefix + ".conv1", style, in_ch, out_ch, 3);
  norm2.load(wl, prefix + ".norm2", style, out_ch);
  conv2.load(wl, prefix + ".conv2", style, out_ch, out_ch, 3);
  has_shortcut = in_ch != out_ch;
  if (has_shortcut) nin_shortcut.load(wl, prefix + ".nin_shortcut", style, in_ch, out_ch, 1);
}

Tensor ResnetBlock::forward(Backend& be, const Tensor& x, int torch_gn_threads) const {
  Tensor h = conv1.forward(be, norm1.forward(be, x, true, torch_gn_threads));
  h = conv2.forward(be, norm2.forward(be, h, true, torch_gn_threads));
  Tensor s = has_shortcut ? nin_shortcut.forward(be, x) : x;
  Tensor y = be.empty(h.shape());
  be.add(s, h, y);
  return y;
}

void AttnBlock::load(const WeightLoader& wl, const std::string& prefix, const KeyStyle& style, int ch) {
  channels = ch;
  norm.load(wl, prefix + ".norm", style, ch);
  qkv.load(wl, prefix + ".qkv", style, ch, 3 * ch, 1);
  proj_out.load(wl, prefix + ".proj_out", style, ch, ch, 1);
}

Tensor AttnBlock::forward(Backend& be, const Tensor& x) const {
  const int64_t B = x.dim(0), C = channels, HW = x.dim(2) * x.dim(3);
  Tensor qkv_out = qkv.forward(be, norm.forward(be, x, false));  // [B, 3C, H, W]
  Tensor q = be.empty({B, 1, HW, C}), k = be.empty({B, 1, HW, C}), v = be.empty({B, 1, HW, C});
  // [B, 3, C, HW] -> per part [B, HW, C]
  Tensor parts = qkv_out.reshape({B, 3, C, HW});
  Tensor tmp = be.empty({B, C, HW});
  Tensor* outs[3] = {&q, &k, &v};
  for (int s = 0; s < 3; ++s) {
    for (int64_t bi = 0; bi < B; ++bi) {
      Tensor src = parts[bi][s];  // [C, HW]
      Tensor dst = tmp[bi];
      be.copy(src, dst);
    }
    Tensor o = outs[s]->reshape({B, HW, C});
    be.transpose_last2(tmp, o);
  }
  Tensor att = be.empty({B, HW, C});
  KVSegment seg{&k, &v, HW, {}};
  be.attention(q, {seg}, 1.0f / std::sqrt(static_cast<float>(C)), att);
  Tensor h = be.empty({B, C, x.dim(2), x.dim(3)});
  Tensor hv = h.reshape({B, C, HW});
  be.transpose_last2(att, hv);
  Tensor p = proj_out.forward(be, h);
  Tensor y = be.empty(x.shape());
  be.add(x, p, y);
  return y;
}

void Upsample2x::load(const WeightLoader& wl, const std::string& prefix, const KeyStyle& style, int ch) {
  conv.load(wl, prefix + ".conv", style, ch, ch, 3);
}

Tensor Upsample2x::forward(Backend& be, const Tensor& x) const {
  Tensor up = be.empty({x.dim(0), x.dim(1), x.dim(2) * 2, x.dim(3) * 2});
  be.interpolate(x, Interp::Nearest, up);
  return conv.forward(be, up);
}

}  // namespace skv
