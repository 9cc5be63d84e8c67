// infinity_family.cpp - see infinity_family.h.
#include "engine/infinity_family.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kvcache/planner.h"
#include "runtime/check.h"

namespace skv {

InfinityFamily::InfinityFamily(const InfinityModel& model, const BsqVae& vae, InfinityRequest defaults,
                               InfinityText text, int64_t text_first)
    : model_(model), vae_(vae), defaults_(std::move(defaults)), text_(std::move(text)), text_first_(text_first) {
  text_start_.assign(text_.lens.size() + 1, 0);
  for (size_t i = 0; i < text_.lens.size(); ++i) text_start_[i + 1] = text_start_[i] + text_.lens[i];
}

void InfinityFamily::check(const EngineRequest& r) const {
  SKV_CHECK(!r.prompts.empty(), "request {}: no prompts (an Infinity request has one prompt per image)", r.id);
  SKV_CHECK(r.labels.empty(), "request {}: class labels are for VAR models; {} takes prompts", r.id,
            model_.config().path);
  const int64_t n = static_cast<int64_t>(text_.lens.size());
  for (int64_t p : r.prompts)
    SKV_CHECK(p >= text_first_ && p < text_first_ + n, "request {}: prompt {} is not among this replica's prompts "
              "[{}, {})", r.id, p, text_first_, text_first_ + n);
  SKV_CHECK(r.image_ids.empty() || r.image_ids.size() == r.prompts.size(), "request {}: {} image_ids for {} prompts",
            r.id, r.image_ids.size(), r.prompts.size());
  SKV_CHECK(std::isfinite(r.cfg), "request {}: cfg {} must be a finite number (< 0: the config's)", r.id, r.cfg);
  SKV_CHECK(r.top_p <= 1, "request {}: top_p {} must be in [0, 1]", r.id, r.top_p);
  check_kv_options(r.kv);
}

InfinityRequest InfinityFamily::infinity_request(const EngineRequest& r) const {
  InfinityRequest q = defaults_;
  if (r.cfg >= 0) q.cfg_list = {r.cfg};
  if (r.top_k >= 0) q.sampling.top_k = r.top_k;
  if (r.top_p >= 0) q.sampling.top_p = static_cast<float>(r.top_p);
  q.seed = r.seed;
  q.image_ids = r.image_ids;
  // The request's prompts, gathered from the table (each its own token range of kv_compact).
  const int64_t C = text_.kv_compact.dim(1);
  int64_t tokens = 0;
  for (int64_t p : r.prompts) tokens += text_.lens[static_cast<size_t>(p - text_first_)];
  q.text.kv_compact = Tensor::empty({tokens, C});
  q.text.lens.clear();
  int64_t at = 0;
  for (int64_t p : r.prompts) {
    const size_t i = static_cast<size_t>(p - text_first_);
    std::memcpy(q.text.kv_compact.f32() + at * C, text_.kv_compact.f32() + text_start_[i] * C,
                static_cast<size_t>(text_.lens[i] * C) * sizeof(float));
    at += text_.lens[i];
    q.text.lens.push_back(text_.lens[i]);
  }
  return q;
}

std::unique_ptr<KVPolicy> InfinityFamily::make_policy(const EngineRequest& r) const {
  const InfinityConfig& cfg = model_.config();
  return make_kv_policy(r.kv, {cfg.depth, cfg.num_heads, defaults_.schedule});
}

std::vector<StepDemand> InfinityFamily::demand(const EngineRequest& r, const KVPolicy& policy) const {
  const InfinityConfig& cfg = model_.config();
  InfinityRequest q = defaults_;  // no text: only its CFG list and schedule decide the rows
  if (r.cfg >= 0) q.cfg_list = {r.cfg};
  const int rows = static_cast<int>(infinity_rows(q, r.images()));
  const int64_t token_bytes = RequestKV::token_bytes(rows, model_.local_heads(), cfg.head_dim());
  return request_demand(plan_kv(policy, q.schedule, cfg.depth, token_bytes), rows);
}

std::unique_ptr<Generation> InfinityFamily::start(const EngineRequest& r, KVPolicy* policy, int decode_begin,
                                                  int decode_end) {
  InfinityRunOptions opt;
  if (const auto h = hooks_.find(r.id); h != hooks_.end()) {
    opt = h->second;
    hooks_.erase(h);
  }
  if (!opt.policy) opt.policy = policy;
  opt.decode = decode_end > decode_begin;
  opt.decode_begin = decode_begin;
  opt.decode_end = decode_end;
  return std::make_unique<InfinityGeneration>(model_, vae_, infinity_request(r), opt, /*shared_kv=*/true);
}

void InfinityFamily::step(const std::vector<Generation*>& batch) {
  std::vector<InfinityGeneration*> gens;
  for (Generation* g : batch) gens.push_back(static_cast<InfinityGeneration*>(g));  // start() made every one
  InfinityGeneration::step(gens);
}

}  // namespace skv
