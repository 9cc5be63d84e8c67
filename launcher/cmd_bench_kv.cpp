// cmd_bench_kv.cpp - `scalekv bench-kv --fidelity | --kv-memory`: the KV-cache benchmarks of
// bench_fidelity.h and bench_kv_memory.h as a command of their own, until `scalekv bench` takes them as
// flags (the functions are the same).
#include <fmt/core.h>

#include <cstdlib>

#include "launcher/bench_fidelity.h"
#include "launcher/bench_kv_memory.h"
#include "launcher/commands.h"
#include "runtime/check.h"

namespace skv {

void register_bench_kv(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench-kv", "KV-cache benchmarks: fidelity against the full cache, KV memory");
  cmd->require_subcommand(1);
  auto f = std::make_shared<FidelityOptions>();
  auto* fc = cmd->add_subcommand("fidelity", "Token agreement, PSNR, SSIM, KV peak and time per policy and budget");
  add_fidelity_options(fc, *f);
  auto m = std::make_shared<KVMemoryOptions>();
  auto* mc = cmd->add_subcommand("kv-memory", "Measured vs planned KV peak per policy, as a share of the full cache");
  add_kv_memory_options(mc, *m);
  fc->callback([f] {
    if (const int rc = run_fidelity_bench(*f, current_command_line())) std::exit(rc);
  });
  mc->callback([m] {
    if (const int rc = run_kv_memory_bench(*m, current_command_line())) std::exit(rc);
  });
}

}  // namespace skv
