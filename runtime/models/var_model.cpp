#include "runtime/models/var_model.h"

#include <cmath>

#include "parallel/communicator.h"
#include "runtime/check.h"
#include "runtime/models/block_ops.h"

namespace skv {

std::string valid_tp_sizes(int num_heads, int ffn_hidden) {
  std::vector<int> ok;
  for (int t = 1; t <= num_heads; ++t)
    if (num_heads % t == 0 && ffn_hidden % t == 0) ok.push_back(t);
  return fmt::format("{}", fmt::join(ok, ", "));
}

ParamCount var_param_count(const VarConfig& cfg) {
  // Mirrors the constructor below: keep the two in step (VarModel.ParamCountIsWhatTheModelPlaces).
  const int64_t C = cfg.embed_dim, F = cfg.ffn_hidden(), H = cfg.num_heads, V = cfg.V, L = cfg.schedule().total();
  const int64_t first = static_cast<int64_t>(cfg.patch_nums[0]) * cfg.patch_nums[0];
  ParamCount p;
  p.matmul_replicated += C * cfg.Cvae + 2 * C * C + V * C;  // word_embed, head_nm, head
  p.other_replicated += C + (cfg.num_classes + 1) * C + first * C + L * C + 2 * C + V;  // biases, class_emb,
                                                                                      // pos_start, lvl_pos
  if (cfg.shared_aln) {
    p.matmul_replicated += 6 * C * C;
    p.other_replicated += 6 * C;
  }
  for (int i = 0; i < cfg.depth; ++i) {
    if (!cfg.shared_aln) p.matmul_replicated += 6 * C * C;
    p.other_replicated += 6 * C;                  // ada_gss or ada_lin bias
    p.matmul_sharded += 3 * C * C + C * C + F * C + C * F;  // mat_qkv, proj, fc1, fc2
    p.other_sharded += 2 * C + F + (cfg.attn_l2_norm ? H : 0);  // q_bias, v_bias, fc1 bias, scale_mul
    p.other_replicated += C + C;                  // proj bias, fc2 bias
  }
  return p;
}

VarModel::VarModel(const VarConfig& cfg, const WeightLoader& wl, Communicator& comm)
    : cfg_(cfg), be_(wl.backend()), comm_(comm) {
  Backend& be = be_;
  const int tp = comm.size(), rank = comm.rank();
  const int C = cfg.embed_dim, H = cfg.num_heads, hd = cfg.head_dim(), F = cfg.ffn_hidden();
  SKV_CHECK(H % tp == 0 && F % tp == 0, "tensor parallel size {} does not divide num_heads {} (and the FFN width {}) "
            "of {}; valid sizes: {}", tp, H, F, cfg.path, valid_tp_sizes(H, F));
  local_heads_ = H / tp;
  head_offset_ = rank * local_heads_;
  local_ffn_ = F / tp;
  const int64_t Cl = static_cast<int64_t>(local_heads_) * hd, c0 = static_cast<int64_t>(head_offset_) * hd;
  const int64_t f0 = static_cast<int64_t>(rank) * local_ffn_;
  const int L = static_cast<int>(cfg.schedule().total());
  const int S = static_cast<int>(cfg.patch_nums.size());

  word_w_ = wl.get("word_embed.weight", {C, cfg.Cvae}, WeightUse::Matmul);
  word_b_ = wl.get("word_embed.bias", {C});
  class_emb_ = wl.get("class_emb.weight", {cfg.num_classes + 1, C});
  const int first_l = cfg.patch_nums[0] * cfg.patch_nums[0];
  pos_start_ = wl.get("pos_start", {1, first_l, C});
  {  // lvl_pos = lvl_embed(lvl_1L) + pos_1LC, built on the host once
    Tensor pos = wl.host("pos_1LC", {1, L, C}), lvl = wl.host("lvl_embed.weight", {S, C});
    Tensor lp = Tensor::empty({L, C}, DType::F32, MemCategory::Weights);
    const auto sched = cfg.schedule();
    for (int s = 0; s < S; ++s)
      for (int64_t t = sched.offset(s); t < sched.offset(s + 1); ++t)
        for (int c = 0; c < C; ++c) lp.f32()[t * C + c] = lvl.f32()[s * C + c] + pos.f32()[t * C + c];
    lvl_pos_ = be.device() == Device::CPU ? lp : be.upload(lp, MemCategory::Weights);
    weight_bytes_ += static_cast<int64_t>(lp.nbytes());
  }
  if (cfg.shared_aln) {
    shared_ada_w_ = wl.get("shared_ada_lin.1.weight", {6 * C, C}, WeightUse::Matmul);
    shared_ada_b_ = wl.get("shared_ada_lin.1.bias", {6 * C});
  }
  head_nm_w_ = wl.get("head_nm.ada_lin.1.weight", {2 * C, C}, WeightUse::Matmul);
  head_nm_b_ = wl.get("head_nm.ada_lin.1.bias", {2 * C});
  head_w_ = wl.get("head.weight", {cfg.V, C}, WeightUse::Matmul);
  head_b_ = wl.get("head.bias", {cfg.V});

  blocks_.resize(cfg.depth);
  for (int i = 0; i < cfg.depth; ++i) {
    auto& b = blocks_[i];
    const std::string p = fmt::format("blocks.{}.", i);
    if (cfg.shared_aln) {
      b.ada_w = wl.get(p + "ada_gss", {1, 1, 6, C});
    } else {
      b.ada_w = wl.get(p + "ada_lin.1.weight", {6 * C, C}, WeightUse::Matmul);
      b.ada_b = wl.get(p + "ada_lin.1.bias", {6 * C});
    }
    b.qkv_w = wl.rows(p + "attn.mat_qkv.weight", {3 * C, C}, {{c0, c0 + Cl}, {C + c0, C + c0 + Cl}, {2 * C + c0, 2 * C + c0 + Cl}},
                     WeightUse::Matmul);
    b.q_bias = wl.rows(p + "attn.q_bias", {C}, {{c0, c0 + Cl}});
    b.v_bias = wl.rows(p + "attn.v_bias", {C}, {{c0, c0 + Cl}});
    if (cfg.attn_l2_norm) {
      Tensor sm = wl.host(p + "attn.scale_mul_1H11", {1, H, 1, 1});
      Tensor hs = Tensor::empty({local_heads_}, DType::F32, MemCategory::Weights);
      const float max_mul = std::log(100.0f);
      for (int h = 0; h < local_heads_; ++h) hs.f32()[h] = std::exp(std::fmin(sm.f32()[head_offset_ + h], max_mul));
      b.head_scale = be.device() == Device::CPU ? hs : be.upload(hs, MemCategory::Weights);
      weight_bytes_ += static_cast<int64_t>(hs.nbytes());
    }
    b.proj_w = wl.cols(p + "attn.proj.weight", {C, C}, c0, c0 + Cl, WeightUse::Matmul);
    b.proj_b = wl.get(p + "attn.proj.bias", {C});
    b.fc1_w = wl.rows(p + "ffn.fc1.weight", {F, C}, {{f0, f0 + local_ffn_}}, WeightUse::Matmul);
    b.fc1_b = wl.rows(p + "ffn.fc1.bias", {F}, {{f0, f0 + local_ffn_}});
    b.fc2_w = wl.cols(p + "ffn.fc2.weight", {C, F}, f0, f0 + local_ffn_, WeightUse::Matmul);
    b.fc2_b = wl.get(p + "ffn.fc2.bias", {C});
  }
  weight_bytes_ += wl.bytes_loaded();
}

void VarModel::all_reduce(Tensor& t) const { tp_all_reduce(comm_, t); }

Tensor VarModel::ada_part(const Tensor& ada, int part) const { return ada_slot(be_, ada, part); }

VarModel::Cond VarModel::prepare_cond(const std::vector<int64_t>& class_ids) const {
  const int C = cfg_.embed_dim;
  const int64_t R = static_cast<int64_t>(class_ids.size());
  for (int64_t id : class_ids)
    SKV_CHECK(id >= 0 && id <= cfg_.num_classes, "class label {} outside [0, {}) (the model has {} classes)", id,
              cfg_.num_classes, cfg_.num_classes);
  Cond c;
  c.cond_BD = be_.empty({R, C});
  be_.embedding(class_emb_, class_ids, c.cond_BD);
  Tensor act = be_.empty({R, C});
  be_.silu(c.cond_BD, act);
  Tensor shared;
  if (cfg_.shared_aln) {
    shared = be_.empty({R, 6, C});
    Tensor sv = shared.reshape({R, 6 * C});
    be_.linear(act, shared_ada_w_, &shared_ada_b_, sv);
  }
  for (const auto& b : blocks_) {
    Tensor ada = be_.empty({R, 6, C});
    if (cfg_.shared_aln) {
      be_.add(shared, b.ada_w, ada);  // ada_gss [1,1,6,C] broadcast over rows
    } else {
      Tensor av = ada.reshape({R, 6 * C});
      be_.linear(act, b.ada_w, &b.ada_b, av);
    }
    c.ada.push_back(ada);
  }
  c.head_ada = be_.empty({R, 2, C});
  Tensor hv = c.head_ada.reshape({R, 2 * C});
  be_.linear(act, head_nm_w_, &head_nm_b_, hv);
  return c;
}

Tensor VarModel::first_input(const Cond& cond) const {
  const int64_t R = cond.cond_BD.dim(0), C = cfg_.embed_dim, fl = pos_start_.dim(1);
  Tensor x = be_.empty({R, fl, C});
  for (int64_t r = 0; r < R; ++r) {
    Tensor xr = x[r];
    Tensor sos = cond.cond_BD[r];
    Tensor ps = pos_start_[0];
    be_.add(ps, sos, xr);  // pos_start + sos (each of the first_l tokens)
    Tensor lp = lvl_pos_.slice0(0, fl);
    be_.add(xr, lp, xr);
  }
  return x;
}

Tensor VarModel::embed_input(const Tensor& vae_in, int si) const {
  const int64_t B = vae_in.dim(0), l = vae_in.dim(1), C = cfg_.embed_dim;
  const auto sched = cfg_.schedule();
  Tensor e = be_.empty({B, l, C});
  be_.linear(vae_in, word_w_, &word_b_, e);
  Tensor lp = lvl_pos_.slice0(sched.offset(si), sched.offset(si) + l);
  be_.add(e, lp, e);
  Tensor x = be_.empty({2 * B, l, C});
  Tensor top = x.slice0(0, B), bottom = x.slice0(B, 2 * B);
  be_.copy(e, top);
  be_.copy(e, bottom);
  return x;
}

void VarModel::attention_block(Tensor& x, const std::vector<PackedPart>& parts, std::vector<ScaleItem>& items,
                               const Block& b, int layer) const {
  const int64_t T = x.dim(0), C = cfg_.embed_dim, hd = cfg_.head_dim(), Hl = local_heads_;
  const Tensor h = adaln_norm(be_, x, parts, 2, 4, cfg_.norm_eps);
  Tensor qkv = be_.empty({T, 3 * Hl * hd});
  be_.linear(h, b.qkv_w, nullptr, qkv);
  Tensor att = be_.empty({T, Hl * hd});
  std::vector<Tensor> qs(items.size()), q_raws(items.size()), att_is(items.size());
  std::vector<AttentionJob> jobs(items.size());
  for (size_t i = 0; i < items.size(); ++i) {  // attention: each request against its own cache, one call
    const PackedPart& p = parts[i];
    ScaleItem& it = items[i];
    MultiScaleKVCache& cache = *it.cache;
    split_request_qkv(be_, packed_view(qkv, p), b.q_bias, b.v_bias, cfg_.attn_l2_norm ? &b.head_scale : nullptr,
                      it.policy->queries().raw, cache, qs[i], q_raws[i]);
    jobs[i].segs = cache.store_segments(layer);
    jobs[i].segs.push_back({&cache.cur_k(), &cache.cur_v(), p.len, {}});
    att_is[i] = packed_view(att, p);
    jobs[i].q = &qs[i];
    jobs[i].out = &att_is[i];
  }
  be_.attention_varlen(jobs, attn_scale());
  Tensor y = be_.empty({T, C});
  be_.linear(att, b.proj_w, nullptr, y);
  all_reduce(y);  // one reduction for every request of the step
  be_.add(y, b.proj_b, y);
  for (size_t i = 0; i < items.size(); ++i) {
    Tensor xp = packed_view(x, parts[i]);
    const Tensor gamma1 = ada_part(*parts[i].ada, 0);
    be_.add_gated(xp, packed_view(y, parts[i]), &gamma1);
    ScaleItem& it = items[i];
    const QueryNeeds needs = it.policy->queries();
    if (it.si + 1 < it.schedule->num_scales())  // the last scale's K/V are never stored
      it.cache->update(layer, it.si, *it.policy, *it.schedule, needs.raw ? &q_raws[i] : nullptr,
                       needs.attention ? &qs[i] : nullptr, attn_scale(), head_offset_);
  }
}

void VarModel::forward_scales(std::vector<ScaleItem>& items) const {
  SKV_CHECK(!items.empty(), "internal: a scale step with no requests");
  const int64_t C = cfg_.embed_dim;
  std::vector<Tensor> xs;
  for (size_t i = 0; i < items.size(); ++i) {
    const ScaleItem& it = items[i];
    SKV_CHECK(it.x.ndim() == 3 && it.x.dim(2) == C && it.cond && it.cache && it.policy && it.schedule,
              "internal: scale item {} is incomplete ({})", i, it.x.describe());
    xs.push_back(it.x);
  }
  std::vector<PackedPart> parts;
  Tensor x = pack_parts(be_, xs, parts);
  const bool check = activation_checks_enabled() && x.device() == Device::CPU;
  auto where = [&] {
    std::string s;
    for (const ScaleItem& it : items) s += fmt::format("{}{}", s.empty() ? "scale " : ", ", it.si);
    return s;
  };
  if (check) check_finite(x, fmt::format("{}: the transformer input", where()));
  for (int i = 0; i < cfg_.depth; ++i) {
    collective_keepalive();  // a replica of one rank has no collectives: other replicas hear it lives
    for (size_t k = 0; k < items.size(); ++k) parts[k].ada = &items[k].cond->ada[i];
    attention_block(x, parts, items, blocks_[i], i);
    adaln_ffn_packed(be_, comm_, x, parts, blocks_[i].fc1_w, blocks_[i].fc1_b, blocks_[i].fc2_w, blocks_[i].fc2_b,
                     local_ffn_, cfg_.norm_eps);
    // Where NaN/Inf first appear: the first block whose output is not finite (a pass over [rows, l, C]
    // per block, well under 1% of the block's own work).
    if (check) check_finite(x, fmt::format("{}, block {}: the hidden state", where(), i));
  }
  for (size_t i = 0; i < items.size(); ++i) items[i].x = packed_view(x, parts[i]);
}

void VarModel::forward_scale(Tensor& x, const Cond& cond, int si, MultiScaleKVCache& cache, KVPolicy& policy,
                             const Schedule& schedule) const {
  std::vector<ScaleItem> items{ScaleItem{x, &cond, si, &cache, &policy, &schedule}};
  forward_scales(items);
  x = items[0].x;
}

Tensor VarModel::logits(const Tensor& x, const Cond& cond) const {
  const int64_t R = x.dim(0), l = x.dim(1), C = cfg_.embed_dim;
  Tensor h = be_.empty({R, l, C});
  be_.layer_norm(x, nullptr, nullptr, cfg_.norm_eps, h);
  be_.modulate(h, ada_part(cond.head_ada, 0), ada_part(cond.head_ada, 1), h);
  Tensor out = be_.empty({R, l, cfg_.V});
  be_.linear(h, head_w_, &head_b_, out);
  return out;
}

}  // namespace skv
