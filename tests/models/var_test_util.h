// var_test_util.h - the tiny VAR shape the tests run as a real model in milliseconds: width 64 in 4
// heads, a 32-entry codebook of 8 channels, a two-level VQ-VAE (ch 32 x {1, 2}, one res block, so the
// image is twice the last patch number), 5 classes. Depth, schedule and top-k vary per test. Also the
// six KV policies at one token budget, as the policy tests (one rank and tensor parallel) compare them.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kvcache/scalekv.h"
#include "runtime/models/var_config.h"

namespace skv::test {

inline VarConfig tiny_var_config(const std::string& path, int depth, std::vector<int> patch_nums, int top_k = 900) {
  VarConfig c;
  c.path = path;
  c.depth = depth;
  c.embed_dim = 64;
  c.num_heads = 4;
  c.patch_nums = std::move(patch_nums);
  c.V = 32;
  c.Cvae = 8;
  c.num_classes = 5;
  c.ch = 32;
  c.vae_ch_mult = {1, 2};
  c.vae_num_res_blocks = 1;
  c.image_size = 2 * c.patch_nums.back();
  c.top_k = top_k;
  return c;
}

// `name` (full, sliding-window, streamingllm, snapkv, pyramidkv, scalekv) with B tokens per layer and
// their default windows; ScaleKV with one drafter per scale and online calibration.
inline std::unique_ptr<KVPolicy> make_test_policy(const std::string& name, int64_t B, const VarConfig& c) {
  if (name == "full") return make_full_policy();
  if (name == "sliding-window") return make_sliding_window_policy(B);
  if (name == "streamingllm") return make_streamingllm_policy(B);
  if (name == "snapkv") return make_snapkv_policy(B, c.depth);
  if (name == "pyramidkv") return make_pyramidkv_policy(B, c.depth);
  ScaleKVOptions o;
  o.budget = B;
  o.drafters_per_scale = 1;
  return std::make_unique<ScaleKVPolicy>(o, c.depth, c.schedule());
}

}  // namespace skv::test
