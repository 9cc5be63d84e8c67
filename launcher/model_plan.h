// model_plan.h - the memory plan of a model run without weights or a forward pass: the transformer's
// shape from its config (VAR or Infinity), its schedule, the KV plan of a policy (kvcache/planner.h)
// in the chosen cache dtypes, the weight bytes per tensor-parallel rank and the largest batch that fits
// a device. Weight bytes count the transformer only (the decoder is a few hundred MB at most);
// activations are an estimate of the largest scale's working set, flagged as such.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "kvcache/planner.h"
#include "launcher/kv_options.h"
#include "runtime/dtype.h"
#include "kvcache/selection.h"  // kScaleKVWindow
#include "runtime/models/weights.h"  // ParamCount

namespace skv {

struct ModelShape {
  std::string name, family, config;
  int depth = 0, embed_dim = 0, num_heads = 0, head_dim = 0, ffn_hidden = 0;
  int vocab = 0;                  // logits per token (VAR: V; Infinity: 2 per bit, InfinityConfig::V())
  int latent_channels = 0;        // word_embed input (VAR: Cvae; Infinity: d_vae, 4 x codebook_dim when patchified)
  int kv_window = kScaleKVWindow;             // the default observation window (VAR config key kv_window)
  Schedule schedule;
  std::string schedule_name;      // "patch_nums" or "1M h/w 1.000"
  ParamCount params;              // what the model's constructor places (runtime/models/*_model.h)
};

// Reads a model config with the family's own loader (VarConfig / InfinityConfig: one parser, so the plan
// and the model never disagree on a shape); for Infinity, `resolution` (256/512/768/1024, 0: the config's) and `h_div_w`
// (0: the config's) pick the dynamic-resolution schedule.
ModelShape load_model_shape(const std::string& config, int resolution = 0, double h_div_w = 0);

struct PlanArgs {
  std::string model;
  int batch = 1;
  int tp = 1;
  std::string k_dtype = "f32", v_dtype = "f32", weight_dtype = "f32";
  std::string device_memory;  // "80GiB", "" = none
  std::string kv_memory;      // a KV cap per rank ("440MiB", "" = none): how many requests a burst holds at once
  int resolution = 0;
  double h_div_w = 0;
  KVOptions kv;
  std::set<std::string> given;  // options given on the command line (cmd_plan.cpp fills it)
};

struct PlanResult {
  ModelShape shape;
  int64_t rows = 0;
  int local_heads = 0;
  int64_t budget_tokens = 0;  // 0 for full
  std::string policy_desc;
  KVPlan kv, full;            // per rank
  int64_t weight_bytes = 0;   // per rank
  int64_t activation_bytes = 0;  // estimate, per rank
  int64_t device_memory = 0;
  int64_t max_batch = -1;     // -1: no --device-memory (64-bit: a large device must not wrap it)
  int64_t bytes_per_image = 0;  // KV peak + activations of one image (what each extra image of a batch costs)
  // --kv-memory: the most requests (of --batch images each) in flight at once when a burst of them arrives
  // together and the engine admits them FCFS under that cap (engine/admission.h burst_concurrency), with this
  // policy and with the full cache; 0 when one request needs more than the cap (kv_never_fits says why).
  int64_t kv_memory = 0;
  int64_t burst_in_flight = -1, full_burst_in_flight = -1;  // -1: no --kv-memory
  std::string kv_never_fits, full_kv_never_fits;
};

PlanResult make_plan(const PlanArgs& a);
int64_t parse_memory_size(const std::string& s);  // "80GiB", "80G", "81920MiB", "1e9" bytes
std::string plan_json(const PlanResult& r, const PlanArgs& a);
std::string plan_text(const PlanResult& r, const PlanArgs& a);

}  // namespace skv
