#include "runtime/models/var_config.h"

#include <cmath>

#include "runtime/check.h"
#include "runtime/json_util.h"

namespace skv {

int VarConfig::ffn_hidden() const { return static_cast<int>(std::lround(embed_dim * mlp_ratio)); }

std::string model_family(const std::string& config_path) {
  const auto j = read_json_file(config_path);
  SKV_CHECK(j.is_object(), "{}: a model config must be a JSON object", config_path);
  if (j.contains("family")) {
    SKV_CHECK(j["family"].is_string(), "{}: field 'family' must be a string", config_path);
    const std::string f = j["family"].get<std::string>();
    SKV_CHECK(f == "var" || f == "infinity", "{}: field 'family' is '{}', expected 'var' or 'infinity'", config_path, f);
    return f;
  }
  if (j.contains("infinity_kwargs") || j.contains("vae_type") ||
      (j.contains("config") && j["config"].is_object() && j["config"].contains("vae_type")))
    return "infinity";
  SKV_CHECK(j.contains("patch_nums"), "{}: cannot tell the model family (no 'family' and no 'patch_nums')",
            config_path);
  return "var";
}

VarConfig VarConfig::load(const std::string& path) { return from_json(read_json_file(path), path); }

VarConfig VarConfig::from_json(const nlohmann::json& j, const std::string& path) {
  SKV_CHECK(j.is_object(), "{}: a model config must be a JSON object", path);
  JsonFields f(j, path);
  // Every key the loader reads, and those the converters and goldens record without being used; a
  // misspelt key is an error, any other unknown key a warning.
  f.check_keys({"depth", "embed_dim", "num_heads", "mlp_ratio", "norm_eps", "shared_aln", "attn_l2_norm", "patch_nums",
                "V", "Cvae", "num_classes", "ch", "vae_ch_mult", "vae_num_res_blocks", "vae_using_sa",
                "vae_using_mid_sa", "quant_resi", "share_quant_resi", "image_size", "cfg", "top_k", "top_p", "kv_window",
                "class_names"},
               {"family", "name", "note", "checkpoint", "vae_checkpoint", "seed", "labels", "beta", "source",
                "generator"});
  VarConfig c;
  c.path = path;
  // Integers are read as 64-bit and range-checked before they become ints: depth 2^32 + 6 is an error,
  // not depth 6. The bounds are far above any released model and keep every derived size in range.
  c.depth = f.int_in("depth", 1, 4096);
  c.embed_dim = f.int_in("embed_dim", 1, 1 << 16);
  c.num_heads = f.int_in("num_heads", 1, 1 << 12);
  c.mlp_ratio = f.number("mlp_ratio", 4.0);
  c.norm_eps = static_cast<float>(f.number("norm_eps", 1e-6));
  c.shared_aln = f.boolean("shared_aln", false);
  c.attn_l2_norm = f.boolean("attn_l2_norm", true);
  c.patch_nums = f.ints_in("patch_nums", 1, 1 << 12, 256);
  c.V = f.int_in("V", 1, 1 << 24);
  c.Cvae = f.int_in("Cvae", 1, 1 << 16);
  c.num_classes = f.int_in("num_classes", 1, 1 << 24);
  c.ch = f.int_in("ch", 1, 1 << 16);
  if (f.has("vae_ch_mult")) c.vae_ch_mult = f.ints_in("vae_ch_mult", 1, 64, 16);
  c.vae_num_res_blocks = f.int_in("vae_num_res_blocks", 2, 0, 64);
  c.vae_using_sa = f.boolean("vae_using_sa", true);
  c.vae_using_mid_sa = f.boolean("vae_using_mid_sa", true);
  c.quant_resi = static_cast<float>(f.number("quant_resi", 0.5));
  c.share_quant_resi = f.int_in("share_quant_resi", 4, 0, 64);
  c.image_size = f.int_in("image_size", 0, 0, 1 << 20);
  c.cfg = f.number("cfg", 1.5);
  c.top_k = f.int_in("top_k", 900, 0, 1 << 24);
  c.top_p = static_cast<float>(f.number("top_p", 0.96));
  c.kv_window = f.int_in("kv_window", kScaleKVWindow, 1, 1 << 20);
  if (f.has("class_names")) c.class_names = f.strings("class_names");

  f.require(c.depth > 0, "depth", "must be positive");
  f.require(c.embed_dim > 0, "embed_dim", "must be positive");
  f.require(c.num_heads > 0 && c.embed_dim % c.num_heads == 0, "num_heads",
            fmt::format("must be positive and divide embed_dim ({})", c.embed_dim));
  f.require(c.mlp_ratio > 0 && c.mlp_ratio <= 64, "mlp_ratio", "must be in (0, 64]");
  f.require(c.norm_eps > 0 && c.norm_eps < 1, "norm_eps", "must be in (0, 1)");
  f.require(c.cfg >= 0, "cfg", "must be >= 0");
  f.require(!c.patch_nums.empty(), "patch_nums", "must not be empty");
  for (size_t i = 0; i < c.patch_nums.size(); ++i)
    f.require(c.patch_nums[i] > 0 && (i == 0 || c.patch_nums[i] > c.patch_nums[i - 1]), "patch_nums",
              "must be positive and strictly increasing");
  f.require(c.V > 0, "V", "must be positive");
  f.require(c.Cvae > 0, "Cvae", "must be positive");
  f.require(c.num_classes > 0, "num_classes", "must be positive");
  f.require(c.ch > 0 && c.ch % 32 == 0, "ch", "must be a positive multiple of 32 (GroupNorm uses 32 groups)");
  f.require(!c.vae_ch_mult.empty(), "vae_ch_mult", "must not be empty");
  for (int m : c.vae_ch_mult) f.require(m > 0, "vae_ch_mult", "must hold positive integers");
  f.require(c.vae_num_res_blocks >= 0, "vae_num_res_blocks", "must be >= 0");
  f.require(c.share_quant_resi >= 0, "share_quant_resi", "must be >= 0");
  f.require(c.top_k >= 0, "top_k", "must be >= 0");
  f.require(c.kv_window > 0, "kv_window", "must be positive");
  f.require(c.top_p >= 0 && c.top_p <= 1, "top_p", "must be in [0, 1]");
  f.require(c.class_names.empty() || static_cast<int>(c.class_names.size()) == c.num_classes, "class_names",
            fmt::format("must have num_classes ({}) entries", c.num_classes));
  const int down = 1 << (c.vae_ch_mult.size() - 1);
  if (c.image_size == 0) c.image_size = c.patch_nums.back() * down;
  f.require(c.image_size == c.patch_nums.back() * down, "image_size",
            fmt::format("must be the last patch_num ({}) times the VAE downsampling ({})", c.patch_nums.back(), down));
  return c;
}

}  // namespace skv
