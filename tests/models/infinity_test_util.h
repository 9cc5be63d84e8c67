// infinity_test_util.h - a tiny Infinity configuration for unit tests (seconds on one core): depth 2 in
// two chunks, width 64 (2 heads of 32), text 128 channels (one pool head), a 3-level BSQ-VAE with
// 8-bit codes and patch 4, and the official 0.06M square schedule (16x16 tokens -> 64x64 pixels).
#pragma once

#include <random>

#include "runtime/models/infinity_config.h"
#include "runtime/models/infinity_generate.h"
#include "runtime/models/infinity_model.h"

namespace skv::test {

inline InfinityConfig tiny_infinity_config(bool patchify = false) {
  InfinityConfig c;
  c.path = "tiny-infinity";
  c.name = "tiny-infinity";
  c.depth = 2;
  c.embed_dim = 64;
  c.num_heads = 2;
  c.text_channels = 128;
  c.text_maxlen = 16;
  c.block_chunks = 2;
  c.spatial_patchify = patchify;
  c.vae.codebook_dim = 8;
  c.vae.patch_size = 4;
  c.vae.base_ch = 32;
  c.vae.num_res_blocks = 1;
  c.vae.decoder_ch_mult = {1, 1, 2};
  c.cfg = 3.0f;
  c.tau = 1.0f;
  return c;
}

// Prompts of the given lengths with N(0, 0.3) features (stand-ins for T5 outputs).
inline InfinityText random_text(const std::vector<int64_t>& lens, int channels, uint32_t seed) {
  int64_t n = 0;
  for (int64_t l : lens) n += l;
  InfinityText t;
  t.lens = lens;
  t.kv_compact = Tensor::empty({n, channels});
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, 0.3f);
  for (int64_t i = 0; i < t.kv_compact.numel(); ++i) t.kv_compact.f32()[i] = d(g);
  return t;
}

// A request on the 0.06M square schedule: prompts of the given lengths (different lengths exercise the
// per-row text lengths), cfg 3, tau 1, unfiltered sampling, seed 42.
inline InfinityRequest tiny_infinity_request(const InfinityConfig& cfg, const std::vector<int64_t>& lens = {6, 2},
                                             uint32_t text_seed = 3) {
  InfinityRequest r;
  r.text = random_text(lens, cfg.text_channels, text_seed);
  r.schedule = infinity_schedule(1.0, "0.06M");
  r.cfg_list = {3.0};
  r.tau_list = {1.0};
  r.sampling.top_k = 0;
  r.sampling.top_p = 0.0f;
  r.seed = 42;
  return r;
}

}  // namespace skv::test
