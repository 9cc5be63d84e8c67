// generate_infinity.h - `scalekv generate` for Infinity configs: prompt embeddings in, PNGs out.
// cmd_generate.cpp registers these options and dispatches here for family "infinity"; everything
// Infinity-specific (schedule from --h-div-w/--resolution, tau, the embeddings file) lives here.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "launcher/context.h"
#include "launcher/kv_options.h"
#include "launcher/model_files.h"
#include "launcher/t5_prompts.h"

namespace skv {

struct InfinityGenerateArgs {
  std::string text_embeddings;  // runtime/models/infinity_text.h format
  double h_div_w = -1;          // < 0: the config's sampling.h_div_w
  int resolution = -1;          // < 0: the config's sampling.resolution
  double tau = -1;              // < 0: the config's sampling.tau
  T5PromptArgs t5;              // --t5 DIR with --prompt / --prompts instead of --text-embeddings
  bool save_tokens = false;     // generate's --save-tokens: OUT/tokens.json
};
void add_infinity_generate_options(CLI::App* cmd, InfinityGenerateArgs& a);

// cfg / top_k / top_p < 0 take the config's defaults; kv_memory / device_memory "": no such cap (the options'
// text, checked by the caller). Writes OUT/NNNN.png per prompt
// (and OUT/tokens.json with a.save_tokens).
void run_generate_infinity(const ModelFiles& f, const InfinityGenerateArgs& a, double cfg, int top_k, float top_p,
                           uint64_t seed, const std::string& out, int batch, const std::string& kv_memory,
                           const std::string& device_memory, const ContextArgs& ctx, const KVOptions& kv);

}  // namespace skv
