// infinity_family.cpp - see infinity_family.h.
#include "engine/infinity_family.h"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/request_memory.h"
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
  const KVPlan plan = plan_kv(policy, q.schedule, cfg.depth, token_bytes, kKVPageSlots);
  std::vector<StepDemand> d = request_demand(plan, rows);

  // Its memory outside the cache (engine/request_memory.h), from the shapes InfinityGeneration allocates.
  std::vector<int64_t> lens;  // text tokens of each image's prompt
  for (int64_t p : r.prompts) lens.push_back(text_.lens[static_cast<size_t>(p - text_first_)]);
  for (const std::string& t : r.texts) lens.push_back(static_cast<int64_t>(encoder_->tok.encode(t, 512).size()));
  int64_t N = 0, Lmax = 0;
  for (int64_t l : lens) {
    N += l;
    Lmax = std::max(Lmax, l);
  }
  const int64_t B = r.images(), R = rows, Ntot = rows == 2 * B ? 2 * N : N;
  const int64_t C = cfg.embed_dim, Ct5 = cfg.text_channels, hd = cfg.head_dim(), depth = cfg.depth;
  const int64_t Hl = model_.local_heads(), tp = cfg.num_heads / Hl, Cl = Hl * hd, Fl = cfg.ffn_hidden() / tp;
  const int pf = cfg.patch_factor(), last = q.schedule.num_scales() - 1;
  const int64_t map = static_cast<int64_t>(q.schedule[last].h) * pf * q.schedule[last].w * pf;  // latent cells
  int64_t max_l = 0;
  for (int s = 0; s <= last; ++s) max_l = std::max<int64_t>(max_l, static_cast<int64_t>(q.schedule[s].h) * q.schedule[s].w);
  RequestMemory m;
  // Its prompts' embeddings, text norm and projection [Ntot, Ct5 + C]; sos, shared AdaLN, every block's AdaLN,
  // the head's; every block's cross-attention K/V [R, Hl, Lmax, hd] x 2; its RoPE table [2, L, hd / 2]; the
  // accumulated codes [B, d, H, W]; the next scale's input [R, l, C].
  m.state_bytes = 4 * (N * Ct5 + Ntot * (Ct5 + C) + R * C * (1 + 6 + 6 * depth + 2) + depth * 2 * R * Cl * Lmax +
                       q.schedule.total() * hd + B * vae_.codebook_dim() * map + R * max_l * C);
  m.bytes_per_row_token = block_bytes_per_row_token(C, Cl, Fl, cfg.V(), true);
  // Selection; the VAE side at the full map size (codes upsampled, the resampled next input, their copies).
  m.step_bytes = selection_bytes(plan, R, Hl) + 4 * 4 * B * vae_.codebook_dim() * map;
  // Building the conditioning: the concatenated text, pooled K/V, the projections' intermediates, one block's
  // cross K/V before packing (and its host copy), the pooling attention's K/V.
  m.first_step_bytes = 4 * (Ntot * (Ct5 + 2 * C + C + 4 * Cl) + 4 * R * C * Lmax);
  if (!r.texts.empty()) {  // encoded at its start: one prompt's encoder activations, the encodings twice
    m.first_step_bytes += encoder_->enc.activation_bytes(Lmax) + 4 * 2 * N * encoder_->cfg.d_model;
  }
  add_request_memory(d, m);
  return d;
}

int64_t InfinityFamily::image_cells(const EngineRequest& r) const {
  const Schedule s = schedule(r);
  const int last = s.num_scales() - 1;
  return static_cast<int64_t>(s[last].h) * s[last].w;
}

DecodeProbe InfinityFamily::probe_decode() {
  const Schedule& s = defaults_.schedule;
  const int last = s.num_scales() - 1, pf = model_.config().patch_factor();
  Backend& be = model_.backend();
  const Tensor z = be.zeros({1, vae_.codebook_dim(), s[last].h * pf, s[last].w * pf});
  return measure_decode(be, static_cast<int64_t>(s[last].h) * s[last].w, [&] { vae_.decode(z); });
}

std::unique_ptr<Generation> InfinityFamily::start(const EngineRequest& r, KVPolicy* policy, KVPagePool& pages,
                                                  int decode_begin, int decode_end) {
  InfinityRunOptions opt;
  if (const auto h = hooks_.find(r.id); h != hooks_.end()) {
    opt = h->second;
    hooks_.erase(h);
  }
  if (!opt.policy) opt.policy = policy;
  opt.decode = decode_end > decode_begin;
  opt.decode_begin = decode_begin;
  opt.decode_end = decode_end;
  return std::make_unique<InfinityGeneration>(model_, vae_, infinity_request(r), opt, &pages);
}

void InfinityFamily::step(const std::vector<Generation*>& batch) {
  std::vector<InfinityGeneration*> gens;
  for (Generation* g : batch) gens.push_back(static_cast<InfinityGeneration*>(g));  // start() made every one
  InfinityGeneration::step(gens);
}

}  // namespace skv
