// model_bundle.h - a model family's transformer and decoder, ready to run, from checkpoint files or
// from deterministic random weights of the config's shape. The one place every command (generate,
// calibrate, bench, verify-golden, the KV benches) loads a model; launcher/ only turns its options
// into a WeightSource. A bundle owns its config and open files, because the models keep references
// to the config (and, on the CPU, may keep the files' pages).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "parallel/communicator.h"
#include "runtime/models/bsq_vae.h"
#include "runtime/models/infinity_model.h"
#include "runtime/models/var_model.h"
#include "runtime/models/vqvae.h"

namespace skv {

// Where the weights come from: the transformer and decoder files, or (random) the deterministic random
// weights of WeightLoader, the transformer from `seed` and the decoder from seed + 1.
struct WeightSource {
  std::string weights, vae;
  bool random = false;
  uint64_t seed = 0;
  static WeightSource files(std::string weights, std::string vae) { return {std::move(weights), std::move(vae)}; }
  static WeightSource random_weights(uint64_t seed) { return {"", "", true, seed}; }
};

struct VarBundle {
  VarConfig cfg;
  std::unique_ptr<SafeTensors> wst, vst;
  std::unique_ptr<VarModel> model;
  std::unique_ptr<VQVAE> vae;
};

struct InfinityBundle {
  InfinityConfig cfg;
  std::unique_ptr<SafeTensors> wst, vst;
  std::unique_ptr<InfinityModel> model;
  std::unique_ptr<BsqVae> vae;
};

// The transformer is sharded over `comm` (its TP group); the decoder is replicated.
std::unique_ptr<VarBundle> load_var(VarConfig cfg, const WeightSource& src, Backend& be, Communicator& comm);
std::unique_ptr<InfinityBundle> load_infinity(InfinityConfig cfg, const WeightSource& src, Backend& be,
                                              Communicator& comm);

}  // namespace skv
