// var_bundle.cpp - loading a VAR model from files or random weights (see var_bundle.h).
#include "launcher/var_bundle.h"

#include <filesystem>

#include "runtime/check.h"

namespace skv {

std::unique_ptr<VarBundle> load_var_bundle(const ModelFiles& files, bool random, uint64_t seed, Backend& be,
                                           Communicator& comm) {
  auto b = std::make_unique<VarBundle>();
  if (random) {
    SKV_CHECK(!files.config.empty(), "--random-weights needs --model CONFIG.json (the shape to fill)");
    SKV_CHECK(std::filesystem::exists(files.config), "{}: no such file", files.config);
    b->cfg = VarConfig::load(files.config);
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
