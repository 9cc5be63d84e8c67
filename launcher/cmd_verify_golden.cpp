// cmd_verify_golden.cpp - `scalekv verify-golden --dir DIR [--name NAME ...]`.
// Without --name, every NAME.config.json in DIR is checked. Families this build cannot run yet are
// reported as SKIP with the reason, never as passed. Exit: 0 all checked goldens passed, 1 any
// failed, 77 (ctest's skip code) when nothing could be checked (no folder, no goldens, all skipped,
// or --device cuda without a visible GPU). With --tp N (under mpirun -n N) the model is tensor
// parallel and must still match the goldens.
#include <fmt/core.h>

#include <filesystem>

#include "launcher/commands.h"
#include "launcher/context.h"
#include "launcher/golden.h"
#include "runtime/backend.h"
#include "launcher/golden_scalekv.h"
#include "parallel/cuda_device.h"
#include "runtime/check.h"
#include "runtime/models/infinity_config.h"
#include "runtime/models/var_config.h"
#include "runtime/models/var_model.h"  // valid_tp_sizes

namespace skv {

namespace {

// When every golden in a folder is checked under --tp N, a golden whose heads or FFN width N does not
// divide cannot be sharded that way: it is skipped with the valid sizes instead of failing the run
// (a golden named with --name still fails with the model's own error).
std::string tp_mismatch(const std::string& cfg, const std::string& family, int tp) {
  if (tp <= 1) return {};
  int H = 0, F = 0;
  if (family == "var") {
    const VarConfig c = VarConfig::load(cfg);
    H = c.num_heads, F = c.ffn_hidden();
  } else if (family == "infinity") {
    const InfinityConfig c = InfinityConfig::load(cfg);
    H = c.num_heads, F = c.ffn_hidden();
  } else {
    return {};
  }
  if (H % tp == 0 && F % tp == 0) return {};
  return fmt::format("tensor parallel size {} does not divide num_heads {} / FFN width {}; valid sizes: {}", tp, H, F,
                     valid_tp_sizes(H, F));
}

struct VerifyArgs {
  std::string dir;
  std::vector<std::string> names;
  GoldenOptions opt;
  ContextArgs ctx;
};

int run_verify(const VerifyArgs& args) {
  VerifyArgs a = args;
  std::string why;
  // CI machines without a GPU: skipped, not failed. Counting GPUs starts no backend: the CUDA backend
  // must start on the device make_context chooses for this rank.
  if (a.ctx.device == "cuda" && cuda_device_count(&why) == 0) {
    fmt::print("SKIP: --device cuda is not available here: {}\n", why);
    return 77;
  }
  RunContext ctx = make_context(a.ctx);
  SKV_CHECK(ctx.replicas == 1, "verify-golden checks one model: start exactly --tp {} ranks (this job has {})", a.ctx.tp,
            ctx.world_size);
  a.opt.device = a.ctx.device;
  a.opt.comm = ctx.tp.get();
  const bool print = ctx.is_output_rank();
  if (!std::filesystem::is_directory(a.dir)) {
    if (print) fmt::print("SKIP: golden folder {} is absent\n", a.dir);
    return 77;
  }
  std::vector<std::string> names = a.names;
  if (names.empty()) {
    for (const auto& e : std::filesystem::directory_iterator(a.dir)) {
      const std::string f = e.path().filename().string();
      const std::string suffix = ".config.json";
      if (f.size() > suffix.size() && f.compare(f.size() - suffix.size(), suffix.size(), suffix) == 0)
        names.push_back(f.substr(0, f.size() - suffix.size()));
    }
    std::sort(names.begin(), names.end());
  }
  int pass = 0, fail = 0, skip = 0;
  for (const auto& name : names) {
    const std::string cfg = a.dir + "/" + name + ".config.json";
    SKV_CHECK(std::filesystem::exists(cfg), "{}: no such golden config", cfg);
    const std::string family = model_family(cfg);
    GoldenOutcome o;
    const std::string mismatch = a.names.empty() ? tp_mismatch(cfg, family, ctx.tp->size()) : std::string();
    if (!mismatch.empty()) {
      o = {GoldenStatus::Skip, mismatch};
    } else if (family == "var") {
      o = verify_var_golden(a.dir, name, a.opt);
    } else if (family == "infinity") {
      o = verify_infinity_golden(a.dir, name, a.opt);
    } else {
      o = {GoldenStatus::Skip, fmt::format("the {} family is not implemented in this build", family)};
    }
    if (o.status == GoldenStatus::Skip && print) fmt::print("SKIP {}: {}\n", name, o.reason);
    (o.status == GoldenStatus::Pass ? pass : o.status == GoldenStatus::Fail ? fail : skip)++;
  }
  // Stage one of the ScaleKV reference check (no model needed): every NAME.scalekv.json golden's records.
  for (const auto& name : scalekv_golden_names(a.dir)) {
    if (!a.names.empty() && std::find(a.names.begin(), a.names.end(), name) == a.names.end()) continue;
    GoldenOptions opt = a.opt;
    opt.verbose = true;
    if (print) fmt::print("{} (ScaleKV selection stage against the official records)\n", name);
    opt.verbose = print;
    const GoldenOutcome o = verify_scalekv_selection_golden(a.dir, name, opt);
    if (print && o.status != GoldenStatus::Pass) fmt::print("{} {}: {}\n", o.status == GoldenStatus::Skip ? "SKIP" : "FAIL", name,
                                                   o.reason);
    (o.status == GoldenStatus::Pass ? pass : o.status == GoldenStatus::Fail ? fail : skip)++;
  }
  if (print) fmt::print("goldens: {} passed, {} failed, {} skipped\n", pass, fail, skip);
  if (fail > 0) return 1;
  return pass > 0 ? 0 : 77;
}

}  // namespace

void register_verify_golden(CLI::App& app) {
  auto a = std::make_shared<VerifyArgs>();
  auto* cmd = app.add_subcommand("verify-golden", "Check the models against reference outputs of the official code");
  cmd->add_option("--dir", a->dir, "Folder of goldens")->required();
  cmd->add_option("--name", a->names, "Golden NAME(s) (default: every NAME.config.json in --dir)");
  add_context_options(cmd, a->ctx);
  cmd->add_option("--tol", a->opt.tol, "Absolute tolerance")->capture_default_str();
  cmd->callback([a] {
    const int rc = run_verify(*a);
    if (rc != 0) std::exit(rc);
  });
}

}  // namespace skv
