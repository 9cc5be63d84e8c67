// var_bundle.cpp - a command's VAR model options -> runtime/models/model_bundle.h (see var_bundle.h).
#include "launcher/var_bundle.h"

#include <filesystem>

#include "runtime/check.h"

namespace skv {

std::unique_ptr<VarBundle> load_var_bundle(const ModelFiles& files, bool random, uint64_t seed, Backend& be,
                                           Communicator& comm, const std::vector<int>& patch_nums) {
  SKV_CHECK(patch_nums.empty() || random, "--patch-nums replaces the schedule of random weights only (a checkpoint's "
            "position table fixes its schedule); add --random-weights");
  if (random) {
    SKV_CHECK(!files.config.empty(), "--random-weights needs --model CONFIG.json (the shape to fill)");
    SKV_CHECK(std::filesystem::exists(files.config), "{}: no such file", files.config);
    VarConfig cfg = VarConfig::load(files.config);
    if (!patch_nums.empty()) {
      for (size_t i = 0; i < patch_nums.size(); ++i)
        SKV_CHECK(patch_nums[i] > 0 && (i == 0 || patch_nums[i] > patch_nums[i - 1]),
                  "--patch-nums must be positive and strictly increasing");
      cfg.patch_nums = patch_nums;
      cfg.image_size = patch_nums.back() * (1 << (cfg.vae_ch_mult.size() - 1));
    }
    return load_var(std::move(cfg), WeightSource::random_weights(seed), be, comm);
  }
  const ModelFiles f = resolve_model_files(files);
  return load_var(VarConfig::load(f.config), WeightSource::files(f.weights, f.vae), be, comm);
}

}  // namespace skv
