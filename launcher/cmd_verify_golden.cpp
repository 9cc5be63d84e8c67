// cmd_verify_golden.cpp - `scalekv verify-golden --dir DIR [--name NAME ...]`.
// Without --name, every NAME.config.json in DIR is checked. Families this build cannot run yet are
// reported as SKIP with the reason, never as passed. Exit: 0 all checked goldens passed, 1 any
// failed, 77 (ctest's skip code) when nothing could be checked (no folder, no goldens, all skipped).
#include <fmt/core.h>

#include <filesystem>

#include "launcher/commands.h"
#include "launcher/golden.h"
#include "runtime/check.h"
#include "runtime/models/var_config.h"

namespace skv {

namespace {

struct VerifyArgs {
  std::string dir;
  std::vector<std::string> names;
  GoldenOptions opt;
};

int run_verify(const VerifyArgs& a) {
  if (!std::filesystem::is_directory(a.dir)) {
    fmt::print("SKIP: golden folder {} is absent\n", a.dir);
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
    if (family == "var") {
      o = verify_var_golden(a.dir, name, a.opt);
    } else if (family == "infinity") {
      o = verify_infinity_golden(a.dir, name, a.opt);
    } else {
      o = {GoldenStatus::Skip, fmt::format("the {} family is not implemented in this build", family)};
    }
    if (o.status == GoldenStatus::Skip) fmt::print("SKIP {}: {}\n", name, o.reason);
    (o.status == GoldenStatus::Pass ? pass : o.status == GoldenStatus::Fail ? fail : skip)++;
  }
  fmt::print("goldens: {} passed, {} failed, {} skipped\n", pass, fail, skip);
  if (fail > 0) return 1;
  return pass > 0 ? 0 : 77;
}

}  // namespace

void register_verify_golden(CLI::App& app) {
  auto a = std::make_shared<VerifyArgs>();
  auto* cmd = app.add_subcommand("verify-golden", "Check the models against reference outputs of the official code");
  cmd->add_option("--dir", a->dir, "Folder of goldens")->required();
  cmd->add_option("--name", a->names, "Golden NAME(s) (default: every NAME.config.json in --dir)");
  cmd->add_option("--device", a->opt.device, "cpu or cuda")->capture_default_str();
  cmd->add_option("--tol", a->opt.tol, "Absolute tolerance")->capture_default_str();
  cmd->callback([a] {
    const int rc = run_verify(*a);
    if (rc != 0) std::exit(rc);
  });
}

}  // namespace skv
