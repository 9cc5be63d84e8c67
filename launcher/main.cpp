// main.cpp - the `scalekv` program: generate, inspect, verify-golden, bench, plan, calibrate and the
// benchmark helpers. Every failure becomes one line "error: ..." and a non-zero exit; under mpirun/srun
// the line names the failing rank and every rank of the job ends (parallel/session.h).
#include <fmt/core.h>

#include <cstdio>
#include <exception>
#include <sstream>

#include "launcher/commands.h"
#include "parallel/session.h"
#include "runtime/check.h"

int main(int argc, char** argv) {
  skv::ParallelSession session(&argc, &argv);  // MPI_Init under a launcher, MPI_Finalize at exit
  CLI::App app{"scalekv: visual autoregressive image generation with a compressed multi-scale KV cache"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  skv::register_generate(app);
  skv::register_inspect(app);
  skv::register_verify_golden(app);
  skv::register_bench(app);
  skv::register_random_checkpoint(app);
  skv::register_bench_scaling(app);
  skv::register_plan(app);
  skv::register_calibrate(app);
  skv::register_encode_text(app);
  skv::register_serve(app);
  skv::rewrite_bench_flags(argc, argv);
  skv::set_warnings_enabled(skv::job_topology().world_rank == 0);  // one copy of each warning per job
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() != 0) {  // a bad option or value: one line, like every other error
      if (skv::job_topology().world_rank == 0)
        fmt::print(stderr, "error: {} (see `scalekv {} --help`)\n", e.what(),
                   app.get_subcommands().empty() ? std::string("") : app.get_subcommands().front()->get_name());
      return e.get_exit_code();
    }
    if (skv::job_topology().world_rank == 0) return app.exit(e);
    std::ostringstream quiet;  // every rank parses the same arguments: one copy of help/errors is enough
    return app.exit(e, quiet, quiet);
  } catch (const std::exception& e) {
    return session.fail(e.what());
  }
  return 0;
}
