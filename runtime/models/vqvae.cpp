#include "runtime/models/vqvae.h"

#include <cmath>

#include "runtime/check.h"
#include "runtime/models/official_rounding.h"

namespace skv {

VQVAE::VQVAE(const VarConfig& cfg, const WeightLoader& wl) : cfg_(cfg), be_(wl.backend()) {
  const KeyStyle style{"", ""};
  const int Cvae = cfg.Cvae;
  embedding_ = wl.get("quantize.embedding.weight", {cfg.V, Cvae});
  const int S = static_cast<int>(cfg.patch_nums.size());
  if (std::fabs(cfg.quant_resi) > 1e-6f) {
    int K = 0;
    std::string fmt_key;
    if (cfg.share_quant_resi == 0) {
      K = S;
      fmt_key = "quantize.quant_resi.{}";
    } else if (cfg.share_quant_resi == 1) {
      K = 1;
      fmt_key = "quantize.quant_resi.qresi";
    } else {
      K = cfg.share_quant_resi;
      fmt_key = "quantize.quant_resi.qresi_ls.{}";
    }
    phi_.resize(K);
    for (int i = 0; i < K; ++i)
      phi_[i].load(wl, fmt::format(fmt::runtime(fmt_key), i), style, Cvae, Cvae, 3);
    if (cfg.share_quant_resi != 1) ticks_ = phi_ticks(K);  // numpy's linspace, bit for bit
  }
  post_quant_conv_.load(wl, "post_quant_conv", style, Cvae, Cvae, 3);

  const auto& mult = cfg.vae_ch_mult;
  const int nres = static_cast<int>(mult.size());
  int block_in = cfg.ch * mult.back();
  conv_in_.load(wl, "decoder.conv_in", style, Cvae, block_in, 3);
  mid_block_1_.load(wl, "decoder.mid.block_1", style, block_in, block_in);
  if (cfg.vae_using_mid_sa) mid_attn_.load(wl, "decoder.mid.attn_1", style, block_in);
  mid_block_2_.load(wl, "decoder.mid.block_2", style, block_in, block_in);
  up_.resize(nres);
  for (int lvl = nres - 1; lvl >= 0; --lvl) {
    auto& L = up_[lvl];
    const int block_out = cfg.ch * mult[lvl];
    for (int i = 0; i <= cfg.vae_num_res_blocks; ++i) {
      L.blocks.emplace_back();
      L.blocks.back().load(wl, fmt::format("decoder.up.{}.block.{}", lvl, i), style, block_in, block_out);
      block_in = block_out;
      if (lvl == nres - 1 && cfg.vae_using_sa) {
        L.attn.emplace_back();
        L.attn.back().load(wl, fmt::format("decoder.up.{}.attn.{}", lvl, i), style, block_in);
      }
    }
    if (lvl != 0) {
      L.has_upsample = true;
      L.upsample.load(wl, fmt::format("decoder.up.{}.upsample", lvl), style, block_in);
    }
  }
  norm_out_.load(wl, "decoder.norm_out", style, block_in);
  conv_out_.load(wl, "decoder.conv_out", style, block_in, 3, 3);
}

int VQVAE::phi_index(int si) const {
  if (phi_.size() <= 1) return 0;
  return phi_tick_index(ticks_, si, static_cast<int>(cfg_.patch_nums.size()));
}

Tensor VQVAE::lookup(const std::vector<int64_t>& idx, int B, int pn) const {
  const int64_t l = static_cast<int64_t>(pn) * pn;
  SKV_CHECK(static_cast<int64_t>(idx.size()) == B * l, "lookup: {} indices for {} x {}x{}", idx.size(), B, pn, pn);
  Tensor e = be_.empty({B, l, cfg_.Cvae});
  be_.embedding(embedding_, idx, e);
  Tensor h = be_.empty({B, cfg_.Cvae, pn, pn});
  Tensor hv = h.reshape({B, cfg_.Cvae, l});
  be_.transpose_last2(e, hv);
  return h;
}

Tensor VQVAE::add_scale(int si, Tensor& f_hat, const Tensor& h_BChw) const {
  const int S = static_cast<int>(cfg_.patch_nums.size());
  const int HW = cfg_.patch_nums.back();
  Tensor h = h_BChw;
  if (si != S - 1) {
    h = be_.empty({h_BChw.dim(0), cfg_.Cvae, HW, HW});
    be_.interpolate(h_BChw, Interp::Bicubic, h);
  }
  if (!phi_.empty()) {
    const Conv2d& phi = phi_[phi_index(si)];
    Tensor c = phi.forward(be_, h);
    const float r = std::fabs(cfg_.quant_resi);
    Tensor mixed = be_.empty(h.shape());
    be_.axpby(h, 1.0f - r, c, r, mixed);  // h * (1 - r) + conv(h) * r
    h = mixed;
  }
  be_.add(f_hat, h, f_hat);
  if (si == S - 1) return f_hat;
  const int pn = cfg_.patch_nums[si + 1];
  Tensor next = be_.empty({f_hat.dim(0), cfg_.Cvae, pn, pn});
  be_.interpolate(f_hat, Interp::Area, next);
  return next;
}

Tensor VQVAE::decode(const Tensor& f_hat) const {
  Tensor h = conv_in_.forward(be_, post_quant_conv_.forward(be_, f_hat));
  h = mid_block_1_.forward(be_, h);
  if (cfg_.vae_using_mid_sa) h = mid_attn_.forward(be_, h);
  h = mid_block_2_.forward(be_, h);
  for (int lvl = static_cast<int>(up_.size()) - 1; lvl >= 0; --lvl) {
    const auto& L = up_[lvl];
    for (size_t i = 0; i < L.blocks.size(); ++i) {
      h = L.blocks[i].forward(be_, h);
      if (!L.attn.empty()) h = L.attn[i].forward(be_, h);
    }
    if (L.has_upsample) h = L.upsample.forward(be_, h);
  }
  h = conv_out_.forward(be_, norm_out_.forward(be_, h, true));
  // clamp to [-1, 1], then (x + 1) / 2
  Tensor host = be_.device() == Device::CPU ? h : be_.download(h);
  float* p = host.f32();
  for (int64_t i = 0, n = host.numel(); i < n; ++i) p[i] = (std::fmin(std::fmax(p[i], -1.0f), 1.0f) + 1.0f) * 0.5f;
  return host;
}

}  // namespace skv
