// t5_prompts.h - text prompts for Infinity commands (`generate`, `calibrate`): `--t5 DIR` with `--prompt TEXT`
// (repeatable) or `--prompts FILE` encodes them with the C++ Flan-T5 encoder (runtime/models/t5_encoder.h)
// instead of reading a precomputed `--text-embeddings` file. The encoder lives only while the prompts are
// encoded (its weights are freed before the image model is loaded): it is not resident during generation.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "runtime/models/infinity_model.h"

namespace skv {

class Backend;
class Communicator;

struct T5PromptArgs {
  std::string t5;                   // Hugging Face T5 folder
  std::vector<std::string> prompt;  // --prompt, repeatable
  std::string prompts_file;         // --prompts (calibrate registers its own --prompts and fills this)
  bool given() const { return !t5.empty(); }
};
// --t5 and --prompt; `with_prompts_file` also adds --prompts FILE (generate; calibrate has its own).
void add_t5_prompt_options(CLI::App* cmd, T5PromptArgs& a, bool with_prompts_file);

// Before anything is loaded: the prompts (read and checked: UTF-8, not empty) when --t5 is given, else
// none; checks that exactly one source of text is given and that the T5 width equals `text_channels`.
std::vector<std::string> t5_prompts(const T5PromptArgs& a, const std::string& text_embeddings, int text_channels,
                                    const std::string& model_config);
// Encodes them on `be`, split over `tp` (every rank gets the same embeddings); `report` prints one line.
InfinityText encode_t5_prompts(const T5PromptArgs& a, const std::vector<std::string>& prompts, Backend& be,
                               Communicator& tp, bool report);

}  // namespace skv
