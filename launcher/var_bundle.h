// var_bundle.h - the VAR model of a command's options: checkpoint files (or the demo model when none
// are given) or --random-weights of a config's shape, optionally on another schedule (--patch-nums).
// The loading itself is runtime/models/model_bundle.h's.
#pragma once

#include <memory>

#include "launcher/model_files.h"
#include "runtime/models/model_bundle.h"
#include "runtime/models/var_generate.h"

namespace skv {

// random: only files.config is used (required) and the weights come from `seed`. patch_nums, when not
// empty, replaces the config's schedule (random weights only: a checkpoint's position table fixes it).
std::unique_ptr<VarBundle> load_var_bundle(const ModelFiles& files, bool random, uint64_t seed, Backend& be,
                                           Communicator& comm, const std::vector<int>& patch_nums = {});

}  // namespace skv
