// var_config.h - hyper-parameters of a class-conditional VAR model and its VQ-VAE.
// The JSON keys are those of the golden configs (../shared/golden/*.config.json) and of
// scripts/convert_var.py, so a golden's config file is a valid model config as it is.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "kvcache/schedule.h"
#include "kvcache/selection.h"  // kScaleKVWindow

namespace skv {

struct VarConfig {
  std::string path;  // where it was read from (for errors)
  int depth = 16, embed_dim = 1024, num_heads = 16;
  double mlp_ratio = 4.0;
  float norm_eps = 1e-6f;
  bool shared_aln = false, attn_l2_norm = true;
  std::vector<int> patch_nums{1, 2, 3, 4, 5, 6, 8, 10, 13, 16};
  int V = 4096, Cvae = 32, num_classes = 1000;
  // VQ-VAE
  int ch = 160;
  std::vector<int> vae_ch_mult{1, 1, 2, 2, 4};
  int vae_num_res_blocks = 2;
  bool vae_using_sa = true, vae_using_mid_sa = true;
  float quant_resi = 0.5f;
  int share_quant_resi = 4;
  int image_size = 256;
  // Sampling defaults (the command line overrides them).
  double cfg = 1.5;  // float64 as the official Python scalar: t = cfg * si / (S - 1) rounds to float once
  int top_k = 900;
  float top_p = 0.96f;
  int kv_window = kScaleKVWindow;  // default observation window of the windowed KV policies (small models need less)
  std::vector<std::string> class_names;

  int head_dim() const { return embed_dim / num_heads; }
  int ffn_hidden() const;  // round(embed_dim * mlp_ratio)
  Schedule schedule() const { return Schedule::square(patch_nums); }

  static VarConfig load(const std::string& path);
  // The same checks on parsed JSON; `where` names the source in errors (the fuzzer's entry point).
  static VarConfig from_json(const nlohmann::json& j, const std::string& where);
};

// "var" or "infinity" for a config file (the "family" key, or inferred from the keys present).
std::string model_family(const std::string& config_path);

}  // namespace skv
