// bench_serve.h - `scalekv bench serve` (cmd_bench_serve.cpp): an arrival trace replayed against the engine.
#pragma once

#include <CLI/CLI.hpp>

namespace skv {

void register_bench_serve(CLI::App* bench);

}  // namespace skv
