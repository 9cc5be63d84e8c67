// infinity_text.h - the prompt-embeddings file the Infinity runtime reads (so it needs no Python or
// text encoder at run time), and random-checkpoint writing for tests and benchmarks.
//
// Text embeddings file (safetensors; scripts/encode_prompts.py writes it from a text file of prompts
// with Flan-T5-XL, exactly as tools/run_infinity.py encode_prompt does):
//   kv_compact  F32 | F16 | BF16  [total_tokens, text_channels]  T5 last_hidden_state of every prompt's
//               non-padding tokens, prompts concatenated in order
//   lens        I64 | I32         [N]                            tokens of each prompt (sum = total_tokens)
//   metadata "prompts" (optional) JSON array of the N prompt strings
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/models/infinity_model.h"

namespace skv {

// Reads and validates a text-embeddings file; `prompts` (optional) gets the prompt strings, or "" each.
InfinityText load_infinity_text(const std::string& path, int text_channels, std::vector<std::string>* prompts = nullptr);
void save_infinity_text(const std::string& path, const InfinityText& text, const std::vector<std::string>& prompts = {});
// Prompts [b0, b1) of `text` as their own InfinityText.
InfinityText slice_infinity_text(const InfinityText& text, int64_t b0, int64_t b1);

// Writes a random-weight Infinity checkpoint (official key names) and BSQ-VAE decoder for `cfg`: the
// tensors WeightLoader's random mode hands out, so a file run and a random run agree.
void write_random_infinity_checkpoint(const InfinityConfig& cfg, const std::string& model_path,
                                      const std::string& vae_path, uint64_t seed);

}  // namespace skv
