#include "launcher/t5_prompts.h"

#include <fmt/core.h>

#include <chrono>

#include "parallel/communicator.h"
#include "runtime/allocator.h"
#include "runtime/check.h"
#include "runtime/models/t5_encoder.h"

namespace skv {

void add_t5_prompt_options(CLI::App* cmd, T5PromptArgs& a, bool with_prompts_file) {
  cmd->add_option("--t5", a.t5, "Infinity: Flan-T5 folder (Hugging Face layout) that encodes --prompt / --prompts");
  cmd->add_option("--prompt", a.prompt, "Infinity with --t5: a text prompt (repeat for several)");
  if (with_prompts_file)
    cmd->add_option("--prompts", a.prompts_file, "Infinity with --t5: text file, one prompt per line");
}

std::vector<std::string> t5_prompts(const T5PromptArgs& a, const std::string& text_embeddings, int text_channels,
                                    const std::string& model_config) {
  if (!a.given()) {
    SKV_CHECK(a.prompt.empty() && a.prompts_file.empty(), "--prompt / --prompts need --t5 DIR (the Flan-T5 folder "
              "that encodes them), or give --text-embeddings FILE instead");
    return {};
  }
  SKV_CHECK(text_embeddings.empty(), "--t5 encodes the prompts itself: give --prompt / --prompts, not "
            "--text-embeddings");
  SKV_CHECK(a.prompt.empty() != a.prompts_file.empty(), "--t5 needs the prompts: --prompt TEXT (repeatable) or "
            "--prompts FILE (one of the two)");
  std::vector<std::string> prompts = a.prompt;
  if (!a.prompts_file.empty()) prompts = read_prompts_file(a.prompts_file);
  for (size_t i = 0; i < prompts.size(); ++i) {
    check_utf8(prompts[i], fmt::format("--prompt {}", i + 1));
    SKV_CHECK(!prompts[i].empty(), "--prompt {} is empty", i + 1);
  }
  const T5Config cfg = T5Config::load(a.t5);
  SKV_CHECK(cfg.d_model == text_channels, "--t5 {}: d_model {} but {} expects text_channels {} (this T5 is not the "
            "model's text encoder)", a.t5, cfg.d_model, model_config, text_channels);
  return prompts;
}

InfinityText encode_t5_prompts(const T5PromptArgs& a, const std::vector<std::string>& prompts, Backend& be,
                               Communicator& tp, bool report) {
  const auto t0 = std::chrono::steady_clock::now();
  T5TextEncoder te(a.t5, be, tp);
  InfinityText text = te.encode(prompts);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (report)
    fmt::print("encoded {} prompts ({} tokens) with T5 {} ({} layers, {} weights per rank, freed after) in {:.3f} s\n",
               prompts.size(), text.kv_compact.dim(0), a.t5, te.cfg.num_layers, format_bytes(te.enc.weight_bytes()), s);
  return text;
}

}  // namespace skv
