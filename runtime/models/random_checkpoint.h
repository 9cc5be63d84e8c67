// random_checkpoint.h - writes a random-weight checkpoint in the official key layout for a config
// (the same tensors WeightLoader's random mode hands out). Used by tests, the TP/scaling benchmark
// and anyone who wants a model file of a given shape without training one.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/models/var_config.h"

namespace skv {

void write_random_var_checkpoint(const VarConfig& cfg, const std::string& var_path, const std::string& vae_path,
                                 uint64_t seed);

}  // namespace skv
