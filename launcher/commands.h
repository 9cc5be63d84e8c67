// commands.h - the `scalekv` subcommands. Each lives in its own cmd_*.cpp and registers itself on
// the CLI11 app; main.cpp only parses, runs and turns exceptions into one-line errors.
#pragma once

#include <CLI/CLI.hpp>

namespace skv {

void register_inspect(CLI::App& app);
void register_generate(CLI::App& app);
void register_verify_golden(CLI::App& app);
void register_bench(CLI::App& app);  // perf (default), and the fidelity / kv-memory subcommands
// `bench --fidelity ...` and `bench --kv-memory ...` (the spelling) -> `bench fidelity ...`.
void rewrite_bench_flags(int argc, char** argv);
void register_random_checkpoint(CLI::App& app);  // cmd_random_checkpoint.cpp
void register_bench_scaling(CLI::App& app);      // cmd_bench_scaling.cpp
void register_plan(CLI::App& app);
void register_calibrate(CLI::App& app);
void register_encode_text(CLI::App& app);  // cmd_encode_text.cpp: prompts -> T5 embeddings file
void register_serve(CLI::App& app);        // cmd_serve.cpp: the HTTP endpoint (server/)

}  // namespace skv
