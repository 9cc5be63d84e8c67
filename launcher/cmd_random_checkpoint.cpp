// cmd_random_checkpoint.cpp - `scalekv random-checkpoint --model CONFIG --out DIR`: a model file of
// any VAR or Infinity shape without training one (the TP scaling benchmark, Slurm tests, demos of big shapes).
// Writes DIR/NAME.config.json (a copy), DIR/NAME.var.safetensors and DIR/NAME.vae.safetensors in the
// official key layout; NAME is the config's file name without .json / .config.json. The weights are
// the deterministic random ones of WeightLoader (seeded by --seed), so the same command makes the
// same bytes.
#include <fmt/core.h>

#include <filesystem>

#include "launcher/commands.h"
#include "runtime/check.h"
#include "runtime/file_io.h"
#include "runtime/models/infinity_config.h"
#include "runtime/models/infinity_text.h"
#include "runtime/models/random_checkpoint.h"
#include "runtime/models/var_config.h"

namespace skv {

namespace {

struct RandomCheckpointArgs {
  std::string config, out, name;
  uint64_t seed = 0;
};

std::string stem_of(const std::string& path) {
  std::string s = std::filesystem::path(path).filename().string();
  for (const std::string suf : {".config.json", ".json"})
    if (s.size() > suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0) return s.substr(0, s.size() - suf.size());
  return s;
}

void run_random_checkpoint(const RandomCheckpointArgs& a) {
  const std::string family = model_family(a.config);
  SKV_CHECK(family == "var" || family == "infinity", "{}: random checkpoints are written for the var and infinity "
            "families (this config is '{}')", a.config, family);
  const std::string name = a.name.empty() ? stem_of(a.config) : a.name;
  prepare_output_dir(a.out, "--out");  // created and probed before the (possibly large) weights are made
  const std::string base = a.out + "/" + name;
  if (std::filesystem::absolute(a.config) != std::filesystem::absolute(base + ".config.json"))
    write_file_atomic(base + ".config.json", read_input_file(a.config, 64ull << 20));
  if (family == "infinity") {  // NAME.model.safetensors + NAME.vae.safetensors, the goldens' names
    write_random_infinity_checkpoint(InfinityConfig::load(a.config), base + ".model.safetensors",
                                     base + ".vae.safetensors", a.seed);
    fmt::print("wrote {0}.config.json, {0}.model.safetensors ({1:.1f} MB), {0}.vae.safetensors ({2:.1f} MB)\n", base,
               std::filesystem::file_size(base + ".model.safetensors") / 1e6,
               std::filesystem::file_size(base + ".vae.safetensors") / 1e6);
    return;
  }
  const VarConfig cfg = VarConfig::load(a.config);
  write_random_var_checkpoint(cfg, base + ".var.safetensors", base + ".vae.safetensors", a.seed);
  fmt::print("wrote {0}.config.json, {0}.var.safetensors ({1:.1f} MB), {0}.vae.safetensors ({2:.1f} MB)\n", base,
             std::filesystem::file_size(base + ".var.safetensors") / 1e6,
             std::filesystem::file_size(base + ".vae.safetensors") / 1e6);
}

}  // namespace

void register_random_checkpoint(CLI::App& app) {
  auto a = std::make_shared<RandomCheckpointArgs>();
  auto* cmd = app.add_subcommand("random-checkpoint", "Write a random-weight checkpoint for a VAR or Infinity model config");
  cmd->add_option("--model", a->config, "Model config JSON")->required()->check(CLI::ExistingFile);
  cmd->add_option("--out", a->out, "Output folder")->required();
  cmd->add_option("--name", a->name, "File name stem (default: the config's)");
  cmd->add_option("--seed", a->seed, "Random seed")->capture_default_str();
  cmd->callback([a] { run_random_checkpoint(*a); });
}

}  // namespace skv
