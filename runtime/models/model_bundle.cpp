// model_bundle.cpp - loading a VAR or Infinity model from files or random weights (see model_bundle.h).
#include "runtime/models/model_bundle.h"

namespace skv {

namespace {

// Fills a bundle whose cfg is set: opens the two files of `src` (none for random weights) and builds the
// model and its decoder from them, or from random weights seeded with seed and seed + 1.
template <class Bundle>
std::unique_ptr<Bundle> load_bundle(std::unique_ptr<Bundle> b, const WeightSource& src, Backend& be,
                                    Communicator& comm) {
  using Model = typename decltype(b->model)::element_type;
  using Vae = typename decltype(b->vae)::element_type;
  if (src.random) {
    b->model = std::make_unique<Model>(b->cfg, WeightLoader(src.seed, be), comm);
    b->vae = std::make_unique<Vae>(b->cfg, WeightLoader(src.seed + 1, be));
  } else {
    b->wst = std::make_unique<SafeTensors>(src.weights);
    b->vst = std::make_unique<SafeTensors>(src.vae);
    b->model = std::make_unique<Model>(b->cfg, *b->wst, be, comm);
    b->vae = std::make_unique<Vae>(b->cfg, *b->vst, be);
  }
  return b;
}

}  // namespace

std::unique_ptr<VarBundle> load_var(VarConfig cfg, const WeightSource& src, Backend& be, Communicator& comm) {
  auto b = std::make_unique<VarBundle>();
  b->cfg = std::move(cfg);
  return load_bundle(std::move(b), src, be, comm);
}

std::unique_ptr<InfinityBundle> load_infinity(InfinityConfig cfg, const WeightSource& src, Backend& be,
                                              Communicator& comm) {
  auto b = std::make_unique<InfinityBundle>();
  b->cfg = std::move(cfg);
  return load_bundle(std::move(b), src, be, comm);
}

}  // namespace skv
