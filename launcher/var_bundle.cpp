// var_bundle.cpp - loading a VAR model from files or random weights (see var_bundle.h).
#include "launcher/var_bundle.h"

#include <filesystem>

#include "runtime/check.h"

namespace skv {

std::unique_ptr<VarBundle> load_var_bundle(const ModelFiles& files, bool random, uint64_t seed, Backend& be,
                                           Communicator& comm, const std::vector<int>& patch_nums) {
  auto b = std::make_unique<VarBundle>();
  SKV_CHECK(patch_nums.empty() || random, "--patch-nums replaces the schedule of random weights only (a checkpoint's "
            "position table fixes its schedule); add --random-weights");
  if (random) {
    SKV_CHECK(!files.config.empty(), "--random-weights needs --model CONFIG.json (the shape to fill)");
    SKV_CHECK(std::filesystem::exists(files.config), "{}: no such file", files.config);
    b->cfg = VarConfig::load(files.config);
    if (!patch_nums.empty()) {
      for (size_t i = 0; i < patch_nums.size(); ++i)
        SKV_CHECK(patch_nums[i] > 0 && (i == 0 || patch_nums[i] > patch_nums[i - 1]),
                  "--patch-nums must be positive and strictly increasing");
      b->cfg.patch_nums = patch_nums;
      b->cfg.image_size = patch_nums.back() * (1 << (b->cfg.vae_ch_mult.size() - 1));
    }
    b->model = std::make_unique<VarModel>(b->cfg, WeightLoader(seed, be), comm);
    b->vae = std::make_unique<VQVAE>(b->cfg, WeightLoader(seed + 1, be));
    return b;
  }
  const ModelFiles f = resolve_model_files(files);
  b->cfg = VarConfig::load(f.config);
  b->wst = std::make_unique<SafeTensors>(f.weights);
  b->vst = std::make_unique<SafeTensors>(f.vae);
  b->model = std::make_unique<VarModel>(b->cfg, *b->wst, be, comm);
  b->vae = std::make_unique<VQVAE>(b->cfg, *b->vst, be);
  return b;
}

}  // namespace skv
