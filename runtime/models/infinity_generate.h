// infinity_generate.h - text-to-image generation with Infinity: the official autoregressive_infer_cfg
// loop (tools/run_infinity.py gen_one_img) with the cache and KV policy of kvcache/.
// Per scale: logits = head(...) * (1 / tau); CFG on logits: cfg * cond + (1 - cfg) * uncond (or on a
// block's hidden state for negative cfg_insertion_layer); every bit is sampled from its pair of logits
// with top-k/top-p and a counter-based uniform keyed (seed, image, scale, token, bit), so results do not
// depend on batch composition; codes of the bits are summed on the final VAE grid and resampled to the
// next scale's grid with the VAE's interpolation mode (8B: 2x2 pixel-unshuffle into 4d channels).
// Observer hooks: on_input (x entering block 0, after the level embedding), on_block_output,
// on_logits_raw [R, l, V], on_logits [B, l, V], on_tokens (bits, [B*l*d_vae], transformer layout),
// on_vae_input (word_embed input [B, l, d_vae]), on_tensor("cond.text_norm" | "cond.sos" | "cond.ca_kv"
// | "cond.gss" | "summed_codes").
#pragma once

#include <vector>

#include "kvcache/policy.h"
#include "runtime/models/bsq_vae.h"
#include "runtime/models/generation.h"
#include "runtime/models/infinity_model.h"

namespace skv {

struct InfinityRequest {
  InfinityText text;                  // one prompt per image
  Schedule schedule;                  // transformer scales (an official dynamic-resolution schedule)
  std::vector<double> cfg_list;       // per scale (one value: every scale)
  std::vector<double> tau_list;       // per scale (one value: every scale)
  std::vector<int> cfg_insertion_layer{0};  // 0: CFG on logits; -k: on the output of block depth - k
  SamplingParams sampling;            // applied to each bit's pair of logits
  uint64_t seed = 0;
  std::vector<uint32_t> image_ids;    // per image RNG stream id; default 0..B-1
};

struct InfinityRunOptions {
  KVPolicy* policy = nullptr;                                  // null: full cache
  const std::vector<std::vector<uint8_t>>* teacher = nullptr;  // per scale bits [B*l*d_vae]: feed these
  GenerationObserver* observer = nullptr;
  ProgressFn progress;
  bool decode = true;
  bool select_at_last_scale = false;  // also run the policy's selection at the last scale (records only)
};

// images in the result: [B, 3, H, W] in [0, 1] = (clamp(decoder, -1, 1) + 1) / 2 (host).
// A request on `schedule` with the config's sampling settings (CFG, tau, CFG insertion layer, top-k,
// top-p); the caller adds the text and the seed and may override the rest.
InfinityRequest infinity_request_defaults(const InfinityConfig& cfg, const Schedule& schedule);

GenerateResult infinity_generate(const InfinityModel& model, const BsqVae& vae, const InfinityRequest& req,
                                 const InfinityRunOptions& opt);

// The official uint8 conversion: (x * 255) truncated, RGB, one H*W*3 buffer per image.
std::vector<std::vector<uint8_t>> infinity_images_to_rgb8(const Tensor& images);

// Transformer-layout bits [B, h, w, 4d] <-> VAE-layout bits [B, 2h, 2w, d] (pixel_shuffle(2) of the
// official unpatchify); identity copies without spatial patchify.
std::vector<uint8_t> infinity_unpatchify_bits(const std::vector<uint8_t>& bits, int B, int h, int w, int d);
std::vector<uint8_t> infinity_patchify_bits(const std::vector<uint8_t>& bits, int B, int h, int w, int d);

}  // namespace skv
