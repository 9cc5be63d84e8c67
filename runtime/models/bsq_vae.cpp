#include "runtime/models/bsq_vae.h"

#include <cmath>

#include "runtime/check.h"

namespace skv {

BsqVae::BsqVae(const InfinityConfig& cfg, const WeightLoader& wl) : cfg_(cfg), be_(wl.backend()) {
  const KeyStyle style{".conv", ".norm"};
  const auto& v = cfg.vae;
  const std::string& m = v.interp;
  mode_ = m == "trilinear" ? Interp::Trilinear
          : m == "bilinear" ? Interp::Bilinear
          : m == "bicubic"  ? Interp::Bicubic
          : m == "area"     ? Interp::Area
                            : Interp::Nearest;
  const int nres = static_cast<int>(v.decoder_ch_mult.size());
  int block_in = v.base_ch * v.decoder_ch_mult.back();
  conv_in_.load(wl, "decoder.conv_in", style, v.codebook_dim, block_in, 3);
  mid_block_1_.load(wl, "decoder.mid.block_1", style, block_in, block_in);
  mid_block_2_.load(wl, "decoder.mid.block_2", style, block_in, block_in);
  up_.resize(nres);
  for (int lvl = nres - 1; lvl >= 0; --lvl) {
    auto& L = up_[lvl];
    const int block_out = v.base_ch * v.decoder_ch_mult[lvl];
    for (int i = 0; i <= v.num_res_blocks; ++i) {
      L.blocks.emplace_back();
      L.blocks.back().load(wl, fmt::format("decoder.up.{}.block.{}", lvl, i), style, block_in, block_out);
      block_in = block_out;
    }
    // Decoder: spatial_up = 1 <= i_level <= log2(patch_size)
    if (lvl >= 1 && (1 << lvl) <= v.patch_size) {
      L.has_upsample = true;
      L.upsample.load(wl, fmt::format("decoder.up.{}.upsample", lvl), style, block_in);
    }
  }
  norm_out_.load(wl, "decoder.norm_out", style, block_in);
  conv_out_.load(wl, "decoder.conv_out", style, block_in, 3, 3);
}

Tensor BsqVae::bits_to_codes(const std::vector<uint8_t>& bits, int B, int h, int w) const {
  const int d = codebook_dim();
  const int64_t hw = static_cast<int64_t>(h) * w;
  SKV_CHECK(static_cast<int64_t>(bits.size()) == B * hw * d, "bits_to_codes: {} bits for {} x {}x{} x {}", bits.size(),
            B, h, w, d);
  // bits * s * 2 - s with s = 1/sqrt(d) (float32), then F.normalize over the d bits of a token.
  const float s = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  const float hi = static_cast<float>(1) * s * 2.0f - s, lo = 0.0f * s * 2.0f - s;
  Tensor host = Tensor::empty({B, d, h, w}, DType::F32, MemCategory::Activations);
  float* o = host.f32();
  for (int b = 0; b < B; ++b)
    for (int64_t t = 0; t < hw; ++t) {
      const uint8_t* tb = bits.data() + (b * hw + t) * d;
      float ss = 0.0f;
      for (int j = 0; j < d; ++j) {
        const float c = tb[j] ? hi : lo;
        ss += c * c;
      }
      const float n = std::max(std::sqrt(ss), 1e-12f);
      for (int j = 0; j < d; ++j) o[(static_cast<int64_t>(b) * d + j) * hw + t] = (tb[j] ? hi : lo) / n;
    }
  return be_.device() == Device::CPU ? host : be_.upload(host, MemCategory::Activations);
}

void BsqVae::interp(const Tensor& x, Tensor& y) const {
  if (mode_ == Interp::Trilinear) {  // the official tensors are [B, d, 1, h, w]
    Tensor x5 = x.reshape({x.dim(0), x.dim(1), 1, x.dim(2), x.dim(3)});
    Tensor y5 = y.reshape({y.dim(0), y.dim(1), 1, y.dim(2), y.dim(3)});
    be_.interpolate(x5, Interp::Trilinear, y5);
  } else {
    be_.interpolate(x, mode_, y);
  }
}

void BsqVae::accumulate(Tensor& summed, const Tensor& codes) const {
  if (codes.dim(2) == summed.dim(2) && codes.dim(3) == summed.dim(3)) {
    be_.add(summed, codes, summed);
    return;
  }
  Tensor up = be_.empty(summed.shape());
  interp(codes, up);
  be_.add(summed, up, summed);
}

Tensor BsqVae::resample(const Tensor& summed, int h, int w) const {
  Tensor y = be_.empty({summed.dim(0), summed.dim(1), h, w});
  interp(summed, y);
  return y;
}

void BsqVae::set_torch_group_norm_threads(int n) {
  SKV_CHECK(n >= 0, "BsqVae: {} torch threads for the GroupNorm emulation", n);
  torch_gn_threads_ = n;
}

Tensor BsqVae::decode(const Tensor& summed) const {
  const int tg = torch_gn_threads_;
  Tensor h = conv_in_.forward(be_, summed);
  h = mid_block_1_.forward(be_, h, tg);
  h = mid_block_2_.forward(be_, h, tg);
  for (int lvl = static_cast<int>(up_.size()) - 1; lvl >= 0; --lvl) {
    const auto& L = up_[lvl];
    for (const auto& blk : L.blocks) h = blk.forward(be_, h, tg);
    if (L.has_upsample) h = L.upsample.forward(be_, h);
  }
  h = conv_out_.forward(be_, norm_out_.forward(be_, h, true, tg));
  Tensor host = be_.device() == Device::CPU ? h : be_.download(h);
  float* p = host.f32();
  for (int64_t i = 0, n = host.numel(); i < n; ++i) p[i] = std::fmin(std::fmax(p[i], -1.0f), 1.0f);
  return host;
}

}  // namespace skv
