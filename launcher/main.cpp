// main.cpp - the `scalekv` program: generate, inspect, verify-golden, bench, plan, calibrate (and, as
// the issues land, serve). Every failure becomes one line "error: ..." and a non-zero exit.
#include <fmt/core.h>

#include <cstdio>
#include <exception>

#include "launcher/commands.h"
#include "runtime/check.h"

int main(int argc, char** argv) {
  CLI::App app{"scalekv: visual autoregressive image generation with a compressed multi-scale KV cache"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  skv::register_generate(app);
  skv::register_inspect(app);
  skv::register_verify_golden(app);
  skv::register_bench(app);
  skv::register_plan(app);
  skv::register_calibrate(app);
  skv::register_bench_kv(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
