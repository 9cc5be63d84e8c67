// infinity_family.cpp - see infinity_family.h.
#include "engine/infinity_family.h"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kvcache/planner.h"
#include "runtime/check.h"

namespace skv {

namespace {

// The prompts `which` of `table` (prompt i's tokens start at row start[i]) as their own InfinityText.
InfinityText gather_prompts(const InfinityText& table, const std::vector<int64_t>& start,
                            const std::vector<size_t>& which) {
  const int64_t C = table.kv_compact.dim(1);
  int64_t tokens = 0;
  for (size_t i : which) tokens += table.lens[i];
  InfinityText t;
  t.kv_compact = Tensor::empty({tokens, C});
  int64_t at = 0;
  for (size_t i : which) {
    std::memcpy(t.kv_compact.f32() + at * C, table.kv_compact.f32() + start[i] * C,
                static_cast<size_t>(table.lens[i] * C) * sizeof(float));
    at += table.lens[i];
    t.lens.push_back(table.lens[i]);
  }
  return t;
}

std::vector<int64_t> prompt_starts(const InfinityText& t) {
  std::vector<int64_t> start(t.lens.size() + 1, 0);
  for (size_t i = 0; i < t.lens.size(); ++i) start[i + 1] = start[i] + t.lens[i];
  return start;
}

}  // namespace

InfinityFamily::InfinityFamily(const InfinityModel& model, const BsqVae& vae, InfinityRequest defaults,
                               InfinityText text, int64_t text_first)
    : model_(model), vae_(vae), defaults_(std::move(defaults)), text_(std::move(text)), text_first_(text_first) {
  text_start_ = prompt_starts(text_);
}

void InfinityFamily::check(const EngineRequest& r) const {
  SKV_CHECK(r.prompts.empty() || r.texts.empty(), "request {}: give prompts by index or as text, not both", r.id);
  SKV_CHECK(!r.prompts.empty() || !r.texts.empty(), "request {}: no prompts (an Infinity request has one prompt per "
            "image)", r.id);
  SKV_CHECK(r.labels.empty(), "request {}: class labels are for VAR models; {} takes prompts", r.id,
            model_.config().path);
  const int64_t n = static_cast<int64_t>(text_.lens.size());
  for (int64_t p : r.prompts)
    SKV_CHECK(p >= text_first_ && p < text_first_ + n, "request {}: prompt {} is not among this replica's prompts "
              "[{}, {})", r.id, p, text_first_, text_first_ + n);
  SKV_CHECK(r.texts.empty() || encoder_, "request {}: text prompts need a resident text encoder (serve --t5)", r.id);
  for (size_t i = 0; i < r.texts.size(); ++i) {  // what would fail in start(), on every rank, fails here
    SKV_CHECK(!r.texts[i].empty(), "request {}: prompt {} is empty", r.id, i + 1);
    encoder_->tok.encode(r.texts[i], 512, fmt::format("request {}: prompt {}", r.id, i + 1));
  }
  SKV_CHECK(r.h_div_w == 0 || resolution_ > 0, "request {}: this engine runs one aspect ratio (h_div_w {})", r.id,
            r.h_div_w);
  schedule(r);  // throws naming the valid aspect ratios
  SKV_CHECK(r.image_ids.empty() || static_cast<int>(r.image_ids.size()) == r.images(), "request {}: {} image_ids for "
            "{} prompts", r.id, r.image_ids.size(), r.images());
  SKV_CHECK(std::isfinite(r.cfg), "request {}: cfg {} must be a finite number (< 0: the config's)", r.id, r.cfg);
  SKV_CHECK(r.top_p <= 1, "request {}: top_p {} must be in [0, 1]", r.id, r.top_p);
  check_kv_options(r.kv);
}

Schedule InfinityFamily::schedule(const EngineRequest& r) const {
  return r.h_div_w == 0 ? defaults_.schedule : infinity_schedule_for(r.h_div_w, resolution_);
}

InfinityRequest InfinityFamily::infinity_request(const EngineRequest& r) const {
  InfinityRequest q = defaults_;
  q.schedule = schedule(r);
  if (r.cfg >= 0) q.cfg_list = {r.cfg};
  if (r.top_k >= 0) q.sampling.top_k = r.top_k;
  if (r.top_p >= 0) q.sampling.top_p = static_cast<float>(r.top_p);
  q.seed = r.seed;
  q.image_ids = r.image_ids;
  std::vector<size_t> which;
  if (!r.texts.empty()) {
    // Each distinct text is encoded once (n images of one prompt: one encoding).
    std::vector<std::string> distinct;
    for (const std::string& t : r.texts) {
      const auto it = std::find(distinct.begin(), distinct.end(), t);
      which.push_back(static_cast<size_t>(it - distinct.begin()));
      if (it == distinct.end()) distinct.push_back(t);
    }
    const InfinityText enc = encoder_->encode(distinct);
    q.text = gather_prompts(enc, prompt_starts(enc), which);
  } else {
    for (int64_t p : r.prompts) which.push_back(static_cast<size_t>(p - text_first_));
    q.text = gather_prompts(text_, text_start_, which);
  }
  return q;
}

std::unique_ptr<KVPolicy> InfinityFamily::make_policy(const EngineRequest& r) const {
  const InfinityConfig& cfg = model_.config();
  return make_kv_policy(r.kv, {cfg.depth, cfg.num_heads, schedule(r)});
}

std::vector<StepDemand> InfinityFamily::demand(const EngineRequest& r, const KVPolicy& policy) const {
  const InfinityConfig& cfg = model_.config();
  InfinityRequest q = defaults_;  // no text: only its CFG list and schedule decide the rows
  q.schedule = schedule(r);
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
