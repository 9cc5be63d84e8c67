// infinity_config.h - hyper-parameters of an Infinity text-to-image model and its BSQ-VAE.
// The JSON layout is the golden one (../shared/golden/README-infinity.md): "infinity_kwargs" holds the
// official Infinity constructor arguments, "vae" the vae_model() builder arguments, "sampling" the
// defaults of a run. So a golden's NAME.config.json and configs/infinity-*.json are read by the same
// code; options the official inference path never uses are rejected with a message, not ignored.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <utility>
#include <vector>

#include "kvcache/schedule.h"
#include "runtime/tensor.h"

namespace skv {

struct InfinityVaeConfig {
  int codebook_dim = 32;            // bits per VAE token (d)
  int patch_size = 16;              // image pixels per latent token (2^number of decoder upsamplings)
  int base_ch = 128;
  int num_res_blocks = 2;
  std::vector<int> decoder_ch_mult{1, 2, 4, 4, 4};
  std::string interp = "trilinear";  // quantizer.z_interplote_up: summed-code up/down sampling
};

struct InfinityConfig {
  std::string path, name;
  // transformer
  int depth = 32, embed_dim = 2048, num_heads = 16;
  double mlp_ratio = 4.0;
  float norm_eps = 1e-6f;
  int text_channels = 2048, text_maxlen = 512;
  bool shared_aln = true;
  float cross_attn_layer_scale = -1.0f;  // >= 0: learnable ca_gamma [C]; < 0: ca_gamma = 1
  bool cos_attn = true;
  float attn_tau = 1.0f;                 // only without cos_attn: scale 1 / sqrt(head_dim) / tau
  int block_chunks = 1;
  bool lvl_embed_only_first_block = true;  // false: before every block chunk
  int rope2d_normalized_by_hw = 2;       // 0: raw (y, x); 2: positions on the final 1M grid
  bool spatial_patchify = false;         // 8B: 2x2 VAE tokens per transformer token
  InfinityVaeConfig vae;
  // sampling defaults (the command line overrides them)
  double cfg = 3.0, tau = 1.0;  // float64, as the official Python scalars
  int top_k = 900;
  float top_p = 0.97f;
  std::vector<int> cfg_insertion_layer{0};
  double h_div_w = 1.0;
  int resolution = 1024;

  int head_dim() const { return embed_dim / num_heads; }
  int ffn_hidden() const;                        // round(C * mlp_ratio / 256) * 256, as the official FFN
  int d_vae() const { return vae.codebook_dim * (spatial_patchify ? 4 : 1); }  // word_embed input
  int V() const { return 2 * d_vae(); }          // bitwise labels: two logits per bit
  int pool_heads() const;                        // text_proj_for_sos heads: Ct5 / (D > 4096 ? 64 : 128)
  int pool_head_dim() const { return embed_dim / pool_heads(); }
  int blocks_per_chunk() const { return depth / block_chunks; }
  // Official state-dict prefix of block i: "blocks.i." (one chunk) or "block_chunks.c.module.j.".
  std::string block_prefix(int i) const;
  // VAE latent tokens per transformer token along each side (2 with the 8B's 2x2 patchify).
  int patch_factor() const { return spatial_patchify ? 2 : 1; }

  static InfinityConfig load(const std::string& path);
  // The same checks on parsed JSON; `where` names the source in errors (the fuzzer's entry point).
  static InfinityConfig from_json(const nlohmann::json& j, const std::string& where);
};

// The (h, w) grid RoPE positions are normalised to (rope2d_normalized_by_hw = 2): the last scale of the
// "1M" schedule of the aspect ratio whose dynamic-resolution table contains `schedule`. Throws naming
// the schedule when it is none of the official ones (the official code would fail a dict lookup).
std::pair<int, int> infinity_rope_grid(const Schedule& schedule);
// The schedule for an aspect ratio and a square-equivalent resolution (256, 512, 768, 1024), errors
// listing the valid ones.
Schedule infinity_schedule_for(double h_div_w, int resolution);
// Host RoPE table [2, total_tokens, head_dim / 2] (cos, sin) for `schedule`, indexed by absolute token
// position (scale offset + y * w + x), exactly as precompute_rope2d_freqs_grid builds it in float32.
Tensor infinity_rope_table(const Schedule& schedule, int head_dim, int normalized_by_hw);

}  // namespace skv
