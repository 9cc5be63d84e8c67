// model_bundle.cpp - loading a VAR or Infinity model from files or random weights (see model_bundle.h).
#include "runtime/models/model_bundle.h"

namespace skv {

namespace {

// Opens the two files of `src` (none for random weights) into the bundle.
template <class Bundle>
void open_files(Bundle& b, const WeightSource& src) {
  if (src.random) return;
  b.wst = std::make_unique<SafeTensors>(src.weights);
  b.vst = std::make_unique<SafeTensors>(src.vae);
}

}  // namespace

std::unique_ptr<VarBundle> load_var(VarConfig cfg, const WeightSource& src, Backend& be, Communicator& comm) {
  auto b = std::make_unique<VarBundle>();
  b->cfg = std::move(cfg);
  open_files(*b, src);
  if (src.random) {
    b->model = std::make_unique<VarModel>(b->cfg, WeightLoader(src.seed, be), comm);
    b->vae = std::make_unique<VQVAE>(b->cfg, WeightLoader(src.seed + 1, be));
  } else {
    b->model = std::make_unique<VarModel>(b->cfg, *b->wst, be, comm);
    b->vae = std::make_unique<VQVAE>(b->cfg, *b->vst, be);
  }
  return b;
}

std::unique_ptr<InfinityBundle> load_infinity(InfinityConfig cfg, const WeightSource& src, Backend& be,
                                              Communicator& comm) {
  auto b = std::make_unique<InfinityBundle>();
  b->cfg = std::move(cfg);
  open_files(*b, src);
  if (src.random) {
    b->model = std::make_unique<InfinityModel>(b->cfg, WeightLoader(src.seed, be), comm);
    b->vae = std::make_unique<BsqVae>(b->cfg, WeightLoader(src.seed + 1, be));
  } else {
    b->model = std::make_unique<InfinityModel>(b->cfg, *b->wst, be, comm);
    b->vae = std::make_unique<BsqVae>(b->cfg, *b->vst, be);
  }
  return b;
}

}  // namespace skv
