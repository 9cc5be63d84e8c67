// cmd_bench.cpp - `scalekv bench` (filled in below by the benchmark step).
#include "launcher/commands.h"

namespace skv {
void register_bench(CLI::App& app) { (void)app; }
}  // namespace skv
