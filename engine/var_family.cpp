// var_family.cpp - see var_family.h.
#include "engine/var_family.h"

#include <cmath>

#include "engine/request_memory.h"
#include "kvcache/planner.h"
#include "runtime/check.h"

namespace skv {

VarRequest VarFamily::var_request(const EngineRequest& r) const {
  const VarConfig& cfg = model_.config();
  VarRequest v;
  v.labels = r.labels;
  v.image_ids = r.image_ids;
  v.seed = r.seed;
  v.cfg = r.cfg >= 0 ? r.cfg : cfg.cfg;
  v.sampling.top_k = r.top_k >= 0 ? r.top_k : cfg.top_k;
  v.sampling.top_p = r.top_p >= 0 ? static_cast<float>(r.top_p) : cfg.top_p;
  return v;
}

EngineRequest VarFamily::engine_request(int64_t id, const VarRequest& v) {
  EngineRequest r;
  r.id = id;
  r.labels = v.labels;
  r.image_ids = v.image_ids;
  r.seed = v.seed;
  r.cfg = v.cfg;
  r.top_k = v.sampling.top_k;
  r.top_p = v.sampling.top_p;
  return r;
}

void VarFamily::check(const EngineRequest& r) const {
  const VarConfig& cfg = model_.config();
  SKV_CHECK(!r.labels.empty(), "request {}: no class labels (a VAR request has one label per image)", r.id);
  SKV_CHECK(r.prompts.empty() && r.texts.empty() && r.h_div_w == 0, "request {}: prompts and aspect ratios are for "
            "Infinity models; {} is class-conditional", r.id, cfg.path);
  for (int64_t lab : r.labels)
    SKV_CHECK(lab >= 0 && lab < cfg.num_classes, "request {}: class label {} outside [0, {})", r.id, lab, cfg.num_classes);
  SKV_CHECK(r.image_ids.empty() || r.image_ids.size() == r.labels.size(), "request {}: {} image_ids for {} labels",
            r.id, r.image_ids.size(), r.labels.size());
  SKV_CHECK(std::isfinite(r.cfg), "request {}: cfg {} must be a finite number (< 0: the model's)", r.id, r.cfg);
  SKV_CHECK(r.top_p <= 1, "request {}: top_p {} must be in [0, 1]", r.id, r.top_p);
  check_kv_options(r.kv);
}

std::unique_ptr<KVPolicy> VarFamily::make_policy(const EngineRequest& r) const {
  const VarConfig& cfg = model_.config();
  return make_kv_policy(r.kv, {cfg.depth, cfg.num_heads, cfg.schedule(), cfg.kv_window});
}

std::vector<StepDemand> VarFamily::demand(const EngineRequest& r, const KVPolicy& policy) const {
  const VarConfig& cfg = model_.config();
  const int rows = 2 * r.images();  // CFG: a conditional and an unconditional row per image
  const int64_t token_bytes = RequestKV::token_bytes(rows, model_.local_heads(), cfg.head_dim());
  const KVPlan plan = plan_kv(policy, cfg.schedule(), cfg.depth, token_bytes, kKVPageSlots);
  std::vector<StepDemand> d = request_demand(plan, rows);
  // Its memory outside the cache (engine/request_memory.h), from the shapes VarGeneration allocates.
  const int64_t C = cfg.embed_dim, R = rows, B = r.images(), P = cfg.patch_nums.back();
  const int64_t tp = cfg.num_heads / model_.local_heads(), Cl = C / tp, Fl = cfg.ffn_hidden() / tp;
  RequestMemory m;
  // cond_BD, SiLU(cond), shared AdaLN, every block's AdaLN [R, 6, C], the head's [R, 2, C]; the next scale's
  // input (at most the last scale's [R, P^2, C]); f_hat [B, Cvae, P, P].
  m.state_bytes = 4 * (R * C * (2 + 6 + 6 * static_cast<int64_t>(cfg.depth) + 2) + R * P * P * C + B * cfg.Cvae * P * P);
  m.bytes_per_row_token = block_bytes_per_row_token(C, Cl, Fl, cfg.V, false);
  m.step_bytes = selection_bytes(plan, R, model_.local_heads());
  // The VAE side of a step, at the full map size whatever the scale: the embedded tokens upsampled, phi's
  // convolution (with oneDNN's blocked copies in and out), the map area-down to the next input.
  m.step_bytes += 4 * 6 * B * cfg.Cvae * P * P;
  add_request_memory(d, m);
  return d;
}

int64_t VarFamily::image_cells(const EngineRequest&) const {
  const int P = model_.config().patch_nums.back();
  return static_cast<int64_t>(P) * P;
}

DecodeProbe VarFamily::probe_decode() {
  const VarConfig& cfg = model_.config();
  const int P = cfg.patch_nums.back();
  Backend& be = model_.backend();
  const Tensor z = be.zeros({1, cfg.Cvae, P, P});
  return measure_decode(be, static_cast<int64_t>(P) * P, [&] { vae_.decode(z); });
}

std::unique_ptr<Generation> VarFamily::start(const EngineRequest& r, KVPolicy* policy, KVPagePool& pages,
                                             int decode_begin, int decode_end) {
  VarRunOptions opt;
  if (const auto h = hooks_.find(r.id); h != hooks_.end()) {
    opt.observer = h->second.observer;
    opt.teacher = h->second.teacher;
    opt.progress = h->second.progress;
    hooks_.erase(h);
  }
  opt.policy = policy;
  opt.decode = decode_end > decode_begin;
  opt.decode_begin = decode_begin;
  opt.decode_end = decode_end;
  return std::make_unique<VarGeneration>(model_, vae_, var_request(r), opt, &pages);
}

void VarFamily::step(const std::vector<Generation*>& batch) {
  std::vector<VarGeneration*> gens;
  for (Generation* g : batch) gens.push_back(static_cast<VarGeneration*>(g));  // start() made every one
  VarGeneration::step(gens);
}

}  // namespace skv
