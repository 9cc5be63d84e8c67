#include "runtime/models/infinity_config.h"

#include <cmath>

#include "runtime/check.h"
#include "runtime/json_util.h"
#include "runtime/tensor.h"

namespace skv {

int InfinityConfig::ffn_hidden() const {
  return static_cast<int>(std::lround(embed_dim * mlp_ratio / 256.0)) * 256;
}

int InfinityConfig::pool_heads() const { return text_channels / (embed_dim > 4096 ? 64 : 128); }

std::string InfinityConfig::block_prefix(int i) const {
  if (block_chunks == 1) return fmt::format("blocks.{}.", i);
  const int n = blocks_per_chunk();
  return fmt::format("block_chunks.{}.module.{}.", i / n, i % n);
}

InfinityConfig InfinityConfig::load(const std::string& path) { return from_json(read_json_file(path), path); }

InfinityConfig InfinityConfig::from_json(const nlohmann::json& j, const std::string& path) {
  SKV_CHECK(j.is_object(), "{}: a model config must be a JSON object", path);
  JsonFields top(j, path);
  SKV_CHECK(top.has("infinity_kwargs"), "{}: an Infinity config needs the object 'infinity_kwargs' (the official "
            "Infinity constructor arguments; scripts/convert_infinity.py writes it)", path);
  const JsonFields k = top.object("infinity_kwargs");
  // What the loader reads and what the official builders record but inference never uses: a misspelt
  // key is an error ("did you mean"), any other unknown key a warning.
  top.check_keys({"family", "name", "infinity_kwargs", "vae", "sampling", "config"},
                 {"note", "checkpoint", "source", "generator", "derived", "deviations", "diagnostics", "init",
                  "blas", "greedy_logit_margin_per_scale", "model_file", "vae_file", "scale_schedule",
                  "scale_token_offsets", "vae_scale_schedule", "text", "torch_num_threads"});
  k.check_keys({"depth", "embed_dim", "num_heads", "mlp_ratio", "norm_eps", "text_channels", "text_maxlen",
                "shared_aln", "cross_attn_layer_scale", "cos_attn", "tau", "block_chunks",
                "add_lvl_embeding_only_first_block", "rope2d_normalized_by_hw", "apply_spatial_patchify", "rms_norm",
                "swiglu", "nm0", "head_aln", "head_depth", "use_bit_label", "rope2d_each_sa_layer", "fused_norm",
                "video_frames", "pn"},
               {"selecting_idx", "drop_rate", "cond_drop_rate", "rand_uncond", "top_p", "top_k", "pad_to_multiplier",
                "train_h_div_w_list", "always_training_scales", "inference_mode", "drop_path_rate", "batch_size",
                "checkpointing", "customized_flash_attn", "fused_mlp", "raw_scale_schedule", "use_flex_attn"});
  InfinityConfig c;
  c.path = path;
  c.name = top.string("name", path);
  // 64-bit reads, range-checked before they become ints (embed_dim 2^32 + 256 is an error, not 256).
  c.depth = k.int_in("depth", 1, 4096);
  c.embed_dim = k.int_in("embed_dim", 1, 1 << 16);
  c.num_heads = k.int_in("num_heads", 1, 1 << 12);
  c.mlp_ratio = k.number("mlp_ratio", 4.0);
  c.norm_eps = static_cast<float>(k.number("norm_eps", 1e-6));
  c.text_channels = k.int_in("text_channels", 0, 1 << 16);
  c.text_maxlen = k.int_in("text_maxlen", 512, 1, 1 << 20);
  c.shared_aln = k.boolean("shared_aln", true);
  c.cross_attn_layer_scale = static_cast<float>(k.number("cross_attn_layer_scale", -1.0));
  c.cos_attn = k.boolean("cos_attn", true);
  c.attn_tau = static_cast<float>(k.number("tau", 1.0));
  c.block_chunks = k.int_in("block_chunks", 1, 1, 4096);
  c.lvl_embed_only_first_block = k.boolean("add_lvl_embeding_only_first_block", true);
  c.rope2d_normalized_by_hw = k.int_in("rope2d_normalized_by_hw", 2, 0, 2);
  c.spatial_patchify = k.boolean("apply_spatial_patchify", false);

  k.require(c.depth > 0, "depth", "must be positive");
  k.require(c.embed_dim > 0, "embed_dim", "must be positive");
  k.require(c.num_heads > 0 && c.embed_dim % c.num_heads == 0, "num_heads",
            fmt::format("must be positive and divide embed_dim ({})", c.embed_dim));
  k.require(c.head_dim() % 4 == 0, "num_heads", "must leave a head_dim divisible by 4 (2-D RoPE)");
  k.require(c.mlp_ratio > 0 && c.mlp_ratio <= 64 && c.ffn_hidden() > 0, "mlp_ratio",
            "must be in (0, 64] and give a positive FFN width");
  k.require(c.norm_eps > 0 && c.norm_eps < 1, "norm_eps", "must be in (0, 1)");
  k.require(c.text_channels != 0, "text_channels", "0 means class-conditional Infinity, which scalekv does not run");
  k.require(c.text_channels > 0 && c.pool_heads() > 0, "text_channels",
            fmt::format("must be a positive multiple of {} (the attentive text pool's head width)",
                        c.embed_dim > 4096 ? 64 : 128));
  k.require(c.embed_dim % c.pool_heads() == 0, "text_channels",
            fmt::format("gives {} text-pool heads, which must divide embed_dim ({})", c.pool_heads(), c.embed_dim));
  k.require(c.text_maxlen > 0, "text_maxlen", "must be positive");
  k.require(c.block_chunks > 0 && c.depth % c.block_chunks == 0, "block_chunks",
            fmt::format("must divide depth ({})", c.depth));
  k.require(c.rope2d_normalized_by_hw == 0 || c.rope2d_normalized_by_hw == 2, "rope2d_normalized_by_hw",
            "must be 0 or 2 (1, bilinear-resampled RoPE, is not used by any released model)");
  // Options the released models do not use: refuse rather than compute something else.
  k.require(!k.boolean("rms_norm", false), "rms_norm", "must be false (released models use LayerNorm)");
  k.require(!k.boolean("swiglu", false), "swiglu", "must be false (released models use the GELU-tanh FFN)");
  k.require(!k.boolean("nm0", false), "nm0", "must be false (no input LayerNorm in released models)");
  k.require(k.boolean("head_aln", true), "head_aln", "must be true (AdaLN before the head)");
  k.require(k.integer("head_depth", 1) == 1, "head_depth", "must be 1");
  k.require(k.integer("use_bit_label", 1) == 1, "use_bit_label", "must be 1 (bitwise labels)");
  k.require(k.integer("rope2d_each_sa_layer", 1) == 1, "rope2d_each_sa_layer", "must be 1");
  k.require(k.boolean("fused_norm", true), "fused_norm", "must be true: without it the official blocks drop "
            "scale_ind and restart RoPE at every scale (tools/run_infinity.py always sets it)");
  k.require(!k.has("video_frames") || k.integer("video_frames") == 1, "video_frames", "must be 1 (images)");

  if (top.has("vae")) {
    const JsonFields v = top.object("vae");
    v.check_keys({"codebook_dim", "embed_dim", "patch_size", "base_ch", "num_res_blocks", "decoder_ch_mult",
                  "z_interplote_up", "autoencoder_args", "cnn_attention"},
                 {"builder", "schedule_mode", "codebook_size", "encoder_ch_mult", "test_mode", "vae_type", "checkpoint",
                  "codebook_scale", "lfq_mask", "vqgan_ckpt"});
    c.vae.codebook_dim = v.has("codebook_dim") ? v.int_in("codebook_dim", 1, 1 << 12) : v.int_in("embed_dim", 32, 1, 1 << 12);
    c.vae.patch_size = v.int_in("patch_size", 16, 1, 1 << 12);
    c.vae.base_ch = v.int_in("base_ch", 128, 1, 1 << 16);
    c.vae.num_res_blocks = v.int_in("num_res_blocks", 2, 0, 64);
    if (v.has("decoder_ch_mult")) c.vae.decoder_ch_mult = v.ints_in("decoder_ch_mult", 1, 64, 16);
    c.vae.interp = v.string("z_interplote_up", "trilinear");
    if (v.has("autoencoder_args")) {  // the golden records the full builder namespace
      const JsonFields a = v.object("autoencoder_args");
      c.vae.num_res_blocks = a.int_in("num_res_blocks", c.vae.num_res_blocks, 0, 64);
      a.require(a.string("cnn_attention", "no") == "no", "cnn_attention", "must be \"no\" (released VAEs)");
      a.require(a.string("cnn_type", "2d") == "2d", "cnn_type", "must be \"2d\" (images)");
      a.require(!a.boolean("use_pxsf", false), "use_pxsf", "must be false");
    }
    v.require(v.string("cnn_attention", "no") == "no", "cnn_attention", "must be \"no\" (released VAEs)");
    v.require(c.vae.codebook_dim > 0, "codebook_dim", "must be positive");
    v.require(c.vae.patch_size > 0 && (c.vae.patch_size & (c.vae.patch_size - 1)) == 0, "patch_size",
              "must be a power of two");
    v.require(c.vae.base_ch > 0, "base_ch", "must be positive");
    v.require(c.vae.num_res_blocks >= 0, "num_res_blocks", "must be >= 0");
    v.require(!c.vae.decoder_ch_mult.empty(), "decoder_ch_mult", "must not be empty");
    int ups = 0;
    for (size_t i = 0; i < c.vae.decoder_ch_mult.size(); ++i) {
      v.require(c.vae.decoder_ch_mult[i] > 0, "decoder_ch_mult", "must hold positive integers");
      const int ch = c.vae.base_ch * c.vae.decoder_ch_mult[i];
      v.require(ch % 32 == 0 || ch % 24 == 0, "base_ch",
                fmt::format("times decoder_ch_mult gives {} channels, not divisible by 32 or 24 (GroupNorm)", ch));
      if (i >= 1 && (1 << i) <= c.vae.patch_size) ++ups;
    }
    v.require((1 << ups) == c.vae.patch_size, "patch_size",
              fmt::format("{} needs log2(patch_size) + 1 <= {} decoder levels", c.vae.patch_size,
                          c.vae.decoder_ch_mult.size()));
    const std::string m = c.vae.interp;
    v.require(m == "trilinear" || m == "bilinear" || m == "bicubic" || m == "area" || m == "nearest", "z_interplote_up",
              "must be trilinear, bilinear, bicubic, area or nearest");
  }

  // Goldens record the run's aspect ratio as config.h_div_w and its pixel budget as infinity_kwargs.pn
  // (tools/run_infinity.py's --h_div_w_template and --pn), not under sampling: the defaults sampling.* overrides.
  if (top.has("config")) c.h_div_w = top.object("config").number("h_div_w", c.h_div_w);
  if (k.has("pn")) {
    const std::string pn = k.string("pn");
    c.resolution = pn == "0.06M" ? 256 : pn == "0.25M" ? 512 : pn == "0.60M" ? 768 : pn == "1M" ? 1024 : 0;
    k.require(c.resolution > 0, "pn", "must be 0.06M, 0.25M, 0.60M or 1M");
  }
  if (top.has("sampling")) {
    const JsonFields s = top.object("sampling");
    s.check_keys({"cfg", "cfg_list", "tau", "tau_list", "top_k", "top_p", "cfg_insertion_layer", "h_div_w", "resolution"},
                 {"B", "call", "cfg_sc", "g_seed", "gt_leak", "inference_mode", "negative_label_B_or_BLT",
                  "sampling_per_bits", "vae_type"});
    s.require(!s.has("cfg_list") || !s.numbers("cfg_list").empty(), "cfg_list", "must not be empty");
    s.require(!s.has("tau_list") || !s.numbers("tau_list").empty(), "tau_list", "must not be empty");
    if (s.has("cfg")) c.cfg = s.number("cfg");
    else if (s.has("cfg_list")) c.cfg = s.numbers("cfg_list").at(0);
    if (s.has("tau")) c.tau = s.number("tau");
    else if (s.has("tau_list")) c.tau = s.numbers("tau_list").at(0);
    c.top_k = s.int_in("top_k", c.top_k, 0, 1 << 24);
    c.top_p = static_cast<float>(s.number("top_p", c.top_p));
    if (s.has("cfg_insertion_layer")) c.cfg_insertion_layer = s.ints_in("cfg_insertion_layer", -4096, 4096, 4096);
    c.h_div_w = s.number("h_div_w", c.h_div_w);
    c.resolution = s.int_in("resolution", c.resolution, 1, 1 << 16);
    s.require(c.h_div_w > 0, "h_div_w", "must be positive");
    s.require(c.cfg >= 0, "cfg", "must be >= 0");
    s.require(c.tau > 0, "tau", "must be positive");
    s.require(c.top_k >= 0, "top_k", "must be >= 0");
    s.require(c.top_p >= 0 && c.top_p <= 1, "top_p", "must be in [0, 1]");
  }
  return c;
}

std::pair<int, int> infinity_rope_grid(const Schedule& schedule) {
  for (double r : infinity_aspect_ratios())
    for (const char* pn : {"0.06M", "0.25M", "0.60M", "1M"}) {
      const Schedule s = infinity_schedule(r, pn);
      if (s.num_scales() != schedule.num_scales()) continue;
      bool same = true;
      for (int i = 0; i < s.num_scales() && same; ++i)
        same = s[i].h == schedule[i].h && s[i].w == schedule[i].w;
      if (!same) continue;
      const Schedule full = infinity_schedule(r, "1M");
      const auto& last = full[full.num_scales() - 1];
      return {last.h, last.w};
    }
  SKV_FAIL("scale schedule {} is not one of Infinity's dynamic-resolution schedules (RoPE positions are defined "
           "only for those; see kvcache/schedule.h)", schedule.describe());
}

Schedule infinity_schedule_for(double h_div_w, int resolution) {
  return infinity_schedule(h_div_w, infinity_pixels_for_resolution(resolution));
}

Tensor infinity_rope_table(const Schedule& schedule, int head_dim, int normalized_by_hw) {
  SKV_CHECK(head_dim % 4 == 0, "RoPE-2D needs head_dim divisible by 4, got {}", head_dim);
  const int half = head_dim / 2;         // rotation pairs per token
  const int nf = (half + 1) / 2;         // frequencies per axis: arange(0, half, 2)
  SKV_CHECK(2 * nf == half, "RoPE-2D: head_dim {} gives an odd number of pairs", head_dim);
  // inv_freq = 1 / 10000 ** (arange(0, half, 2) / half), float32 as in precompute_rope2d_freqs_grid
  std::vector<float> inv(nf);
  for (int i = 0; i < nf; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(half);
    inv[i] = 1.0f / std::pow(10000.0f, e);
  }
  int uph = 0, upw = 0;
  if (normalized_by_hw == 2) std::tie(uph, upw) = infinity_rope_grid(schedule);
  const int64_t L = schedule.total();
  Tensor t = Tensor::empty({2, L, half}, DType::F32, MemCategory::Weights);
  float* cs = t.f32();
  constexpr int kMaxEdge = 2048 / 16;  // the official table covers 128 x 128 positions
  for (int s = 0; s < schedule.num_scales(); ++s) {
    const int h = schedule[s].h, w = schedule[s].w;
    const float fy = normalized_by_hw == 2 ? static_cast<float>(static_cast<double>(uph) / h) : 1.0f;
    const float fx = normalized_by_hw == 2 ? static_cast<float>(static_cast<double>(upw) / w) : 1.0f;
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        // (arange(ph) * (uph / ph)).round(): float32 product, round half to even
        const int iy = normalized_by_hw == 2 ? static_cast<int>(std::nearbyint(static_cast<float>(y) * fy)) : y;
        const int ix = normalized_by_hw == 2 ? static_cast<int>(std::nearbyint(static_cast<float>(x) * fx)) : x;
        SKV_CHECK(iy < kMaxEdge && ix < kMaxEdge, "RoPE-2D: position ({}, {}) beyond the official 128 x 128 table", iy, ix);
        const int64_t p = schedule.offset(s) + static_cast<int64_t>(y) * w + x;
        for (int i = 0; i < half; ++i) {
          const float ang = i < nf ? static_cast<float>(iy) * inv[i] : static_cast<float>(ix) * inv[i - nf];
          cs[p * half + i] = static_cast<float>(std::cos(static_cast<double>(ang)));
          cs[(L + p) * half + i] = static_cast<float>(std::sin(static_cast<double>(ang)));
        }
      }
  }
  return t;
}

}  // namespace skv
