// cmd_encode_text.cpp - `scalekv encode-text --t5 DIR --prompts FILE --out FILE.safetensors`: prompts ->
// the text-embeddings file Infinity reads, the same file scripts/encode_prompts.py writes (kv_compact,
// lens, metadata), with the Flan-T5 encoder in C++ (runtime/models/t5_encoder.h). Under mpirun the
// encoder is split over --tp ranks; rank 0 of the first replica writes the file.
#include <fmt/core.h>

#include <algorithm>
#include <chrono>

#include "launcher/commands.h"
#include "launcher/context.h"
#include "parallel/communicator.h"
#include "runtime/allocator.h"
#include "runtime/check.h"
#include "runtime/file_io.h"
#include "runtime/models/t5_encoder.h"

namespace skv {

void register_encode_text(CLI::App& app) {
  struct Args {
    std::string t5, prompts, out;
    std::vector<std::string> prompt;
    ContextArgs ctx;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("encode-text", "Encode prompts with a Flan-T5 checkpoint folder into a text-embeddings "
                                 "file (what scripts/encode_prompts.py writes)");
  cmd->add_option("--t5", a->t5, "Hugging Face T5 folder: config.json, model.safetensors (or shards + index), "
                  "spiece.model")->required();
  cmd->add_option("--prompts", a->prompts, "Text file, one prompt per line (blank lines skipped, lines stripped)");
  cmd->add_option("--prompt", a->prompt, "A prompt (repeat for several); instead of --prompts");
  cmd->add_option("--out", a->out, "Output .safetensors (kv_compact F32 [tokens, d_model], lens I64 [prompts])")
      ->required();
  add_context_options(cmd, a->ctx);
  cmd->callback([a] {
    SKV_CHECK(a->prompts.empty() != a->prompt.empty(), "give either --prompts FILE or --prompt TEXT (not both, not "
              "neither)");
    check_output_file(a->out, "--out");
    std::vector<std::string> prompts = a->prompt;
    if (!a->prompts.empty()) prompts = read_prompts_file(a->prompts);
    for (size_t i = 0; i < prompts.size(); ++i) check_utf8(prompts[i], fmt::format("--prompt {}", i + 1));
    RunContext ctx = make_context(a->ctx);
    const auto t0 = std::chrono::steady_clock::now();
    T5TextEncoder te(a->t5, *ctx.backend, *ctx.tp);
    const auto t1 = std::chrono::steady_clock::now();
    const InfinityText text = te.encode(prompts);
    const auto t2 = std::chrono::steady_clock::now();
    if (!ctx.is_output_rank() || ctx.replica != 0) return;
    save_t5_text_embeddings(a->out, text, prompts, a->t5);
    const double load_s = std::chrono::duration<double>(t1 - t0).count(), enc_s = std::chrono::duration<double>(t2 - t1).count();
    const int64_t longest = *std::max_element(text.lens.begin(), text.lens.end());
    fmt::print("wrote {}: {} prompts, {} tokens x {} channels (T5 {} layers, {} weights and {} activations at {} tokens "
               "on this rank, load {:.2f} s, encode {:.3f} s = {:.3f} s/prompt on {}{})\n", a->out, prompts.size(),
               text.kv_compact.dim(0), text.kv_compact.dim(1), te.cfg.num_layers, format_bytes(te.enc.weight_bytes()),
               format_bytes(te.enc.activation_bytes(longest)), longest, load_s, enc_s,
               enc_s / static_cast<double>(prompts.size()), ctx.backend->name(),
               ctx.tp->size() > 1 ? fmt::format(" x {} tensor-parallel ranks", ctx.tp->size()) : std::string());
  });
}

}  // namespace skv
