// cmd_plan.cpp - `scalekv plan`: the KV memory of a model, schedule, batch, policy and budget, scale by
// scale, with the weight bytes per rank, the largest batch that fits a device and how many requests a burst
// holds in flight under a KV cap - without weights and without running the model (launcher/model_plan.h).
// --json prints one JSON object. --t5 DIR adds the text encoder's weights and activations per rank
// (runtime/models/t5_encoder.h, from its config.json).
#include <fmt/core.h>

#include "launcher/commands.h"
#include "launcher/model_plan.h"
#include "runtime/allocator.h"
#include "runtime/models/t5_encoder.h"

#include <nlohmann/json.hpp>

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
  cmd->add_option("--kv-memory", a->kv_memory,
                  "KV cap per rank (e.g. 440MiB): print how many requests a burst holds in flight at once (serve's "
                  "admission), this policy and the full cache");
  cmd->add_option("--resolution", a->resolution, "Infinity: 256, 512, 768 or 1024 (default: the config's)");
  cmd->add_option("--h-div-w", a->h_div_w, "Infinity: aspect ratio h/w of the schedule (default: the config's)");
  cmd->add_flag("--json", *json, "Print one JSON object");
  auto t5 = std::make_shared<std::string>();
  cmd->add_option("--t5", *t5, "Infinity: also the Flan-T5 text encoder of this folder (its config.json only)");
  add_kv_options(cmd, a->kv);
  cmd->callback([a, json, cmd, t5] {
    for (const auto* o : cmd->get_options())
      if (o->count() > 0) a->given.insert(o->get_name());
    const PlanResult r = make_plan(*a);
    if (t5->empty()) {
      fmt::print("{}\n", *json ? plan_json(r, *a) : plan_text(r, *a));
      return;
    }
    // The text encoder: its bytes per rank at the longest prompt (512 tokens). generate / calibrate free it
    // before the image model loads; a process that keeps it (a server) adds both to the figures above.
    const T5Config tc = T5Config::load(*t5);
    const T5Memory m = t5_memory(tc, a->tp, dtype_from_cli(a->weight_dtype), 512);
    if (*json) {
      auto j = nlohmann::json::parse(plan_json(r, *a));
      j["text_encoder"] = {{"t5", *t5}, {"weight_bytes_per_rank", m.weights}, {"activation_bytes_512_tokens", m.activations},
                           {"resident_during_generation", false}};
      fmt::print("{}\n", j.dump(1));
      return;
    }
    fmt::print("{}\n", plan_text(r, *a));
    fmt::print("text encoder {} ({} layers, d_model {}): {} weights and {} activations (512 tokens) per rank; freed "
               "before the image model loads (not resident while images are made); resident (a server): add {}\n",
               *t5, tc.num_layers, tc.d_model, format_bytes(m.weights), format_bytes(m.activations),
               format_bytes(m.weights + m.activations));
  });
}

}  // namespace skv
