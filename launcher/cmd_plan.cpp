// cmd_plan.cpp - `scalekv plan`: the KV memory of a model, schedule, batch, policy and budget, scale by
// scale, with the weight bytes per rank and the largest batch that fits a device - without weights and
// without running the model (launcher/model_plan.h). --json prints one JSON object.
#include <fmt/core.h>

#include "launcher/commands.h"
#include "launcher/model_plan.h"

namespace skv {

void register_plan(CLI::App& app) {
  auto a = std::make_shared<PlanArgs>();
  auto json = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("plan", "Plan the KV-cache memory of a model run (no weights needed)");
  cmd->add_option("--model", a->model, "Model config JSON (VAR or Infinity)")->required();
  cmd->add_option("--batch", a->batch, "Images per forward pass (2 rows each with CFG)")->capture_default_str();
  cmd->add_option("--tp", a->tp, "Tensor-parallel size (heads are split over the ranks)")->capture_default_str();
  cmd->add_option("--k-dtype", a->k_dtype, "Key cache dtype (f32, f16, bf16)")->capture_default_str();
  cmd->add_option("--v-dtype", a->v_dtype, "Value cache dtype (f32, f16, bf16)")->capture_default_str();
  cmd->add_option("--weight-dtype", a->weight_dtype, "Weight dtype for the weight bytes")->capture_default_str();
  cmd->add_option("--device-memory", a->device_memory, "Device memory per rank (e.g. 80GiB): print the largest batch");
  cmd->add_option("--resolution", a->resolution, "Infinity: 256, 512, 768 or 1024 (default: the config's)");
  cmd->add_option("--h-div-w", a->h_div_w, "Infinity: aspect ratio h/w of the schedule (default: the config's)");
  cmd->add_flag("--json", *json, "Print one JSON object");
  add_kv_options(cmd, a->kv);
  cmd->callback([a, json, cmd] {
    for (const auto* o : cmd->get_options())
      if (o->count() > 0) a->given.insert(o->get_name());
    const PlanResult r = make_plan(*a);
    fmt::print("{}\n", *json ? plan_json(r, *a) : plan_text(r, *a));
  });
}

}  // namespace skv
