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
// InfinityGeneration is that loop one scale at a time (see Generation): the engine steps many of them
// together, each at its own scale of its own schedule, with its own text, CFG and KV policy;
// infinity_generate steps one alone.
#pragma once

#include <vector>

#include "kvcache/policy.h"
#include "runtime/models/bsq_vae.h"
#include "runtime/models/generation.h"
#include "runtime/models/infinity_model.h"
#include "runtime/models/request_kv.h"

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
  // Decode only images [decode_begin, decode_end) of the batch (-1: to its end): as VarRunOptions.
  int64_t decode_begin = 0, decode_end = -1;
  bool select_at_last_scale = false;  // also run the policy's selection at the last scale (records only)
};

// images in the result: [B, 3, H, W] in [0, 1] = (clamp(decoder, -1, 1) + 1) / 2 (host).
// A request on `schedule` with the config's sampling settings (CFG, tau, CFG insertion layer, top-k,
// top-p); the caller adds the text and the seed and may override the rest.
InfinityRequest infinity_request_defaults(const InfinityConfig& cfg, const Schedule& schedule);

// Transformer rows of `req` with `images` images: twice the images when CFG is on at any of its scales
// (cfg_list: one value for every scale, or one per scale).
int64_t infinity_rows(const InfinityRequest& req, int64_t images);

// An Infinity request in progress. The constructor checks the request, prepares its text conditioning,
// RoPE table and KV cache (from the memory plan); step() runs the next scale of several generations of
// one model as one packed forward pass (InfinityModel::forward_scales), then the logits, CFG, sampling
// and next input of each, with one broadcast of every generation's bits under tensor parallelism.
class InfinityGeneration final : public Generation {
 public:
  // kv_pages: the engine's KV page pool, shared with the other requests in flight (null: alone); see RequestKV.
  InfinityGeneration(const InfinityModel& model, const BsqVae& vae, InfinityRequest req, InfinityRunOptions opt,
                     KVPagePool* kv_pages = nullptr);
  int num_scales() const override { return req_.schedule.num_scales(); }
  int scales_done() const override { return si_; }
  int images() const { return static_cast<int>(req_.text.lens.size()); }
  // The request as checked: image ids filled in, cfg_list and tau_list one value per scale.
  const InfinityRequest& request() const { return req_; }
  GenerateResult finish() override;
  Tensor preview() const override;
  // The next scale of every generation in `batch` (distinct, not done, all of one model).
  static void step(const std::vector<InfinityGeneration*>& batch);

 private:
  InfinityModel::ScaleArgs scale_args();            // the model's settings for the next scale
  std::vector<uint8_t> sample_bits();                // this scale's bits from the model's output x_
  void take_bits(const std::vector<uint8_t>& bits);  // records them, adds their codes, embeds the next input

  const InfinityModel& model_;
  const BsqVae& vae_;
  InfinityRequest req_;
  InfinityRunOptions opt_;
  int64_t rows_;  // transformer rows: the images, twice with CFG at any scale
  GenerateResult res_;
  RequestKV kv_;
  bool cfg_on_logits_ = false;  // cfg_insertion_layer holds 0
  std::vector<int> cfg_layers_;  // blocks after which CFG mixes the hidden state
  InfinityModel::Cond cond_;
  Tensor rope_, summed_, x_;
  int si_ = 0;
  double t_start_ = 0, t_scale_ = 0;
  bool finished_ = false;
};

// One request from start to end: an InfinityGeneration stepped alone.
GenerateResult infinity_generate(const InfinityModel& model, const BsqVae& vae, const InfinityRequest& req,
                                 const InfinityRunOptions& opt);

// The official uint8 conversion: (x * 255) truncated, RGB, one H*W*3 buffer per image.
std::vector<std::vector<uint8_t>> infinity_images_to_rgb8(const Tensor& images);

// Transformer-layout bits [B, h, w, 4d] <-> VAE-layout bits [B, 2h, 2w, d] (pixel_shuffle(2) of the
// official unpatchify); identity copies without spatial patchify.
std::vector<uint8_t> infinity_unpatchify_bits(const std::vector<uint8_t>& bits, int B, int h, int w, int d);
std::vector<uint8_t> infinity_patchify_bits(const std::vector<uint8_t>& bits, int B, int h, int w, int d);

}  // namespace skv
