// var_bundle.h - a VAR model and its VQ-VAE ready to generate, from checkpoint files (or the demo model)
// or from deterministic random weights of a config's shape (benchmarks, calibration smoke runs).
// The bundle owns the config, because VarModel keeps a reference to it.
#pragma once

#include <memory>

#include "launcher/model_files.h"
#include "runtime/models/var_generate.h"

namespace skv {

struct VarBundle {
  VarConfig cfg;
  std::unique_ptr<SafeTensors> wst, vst;
  std::unique_ptr<VarModel> model;
  std::unique_ptr<VQVAE> vae;
};

// random: only files.config is used (required) and the weights come from `seed`. patch_nums, when not
// empty, replaces the config's schedule (random weights only: a checkpoint's position table fixes it).
std::unique_ptr<VarBundle> load_var_bundle(const ModelFiles& files, bool random, uint64_t seed, Backend& be,
                                           Communicator& comm, const std::vector<int>& patch_nums = {});

}  // namespace skv
