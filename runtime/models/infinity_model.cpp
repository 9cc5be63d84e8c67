#include "runtime/models/infinity_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/check.h"
#include "runtime/models/block_ops.h"
#include "runtime/models/var_model.h"  // valid_tp_sizes

namespace skv {

ParamCount infinity_param_count(const InfinityConfig& cfg) {
  // Mirrors the constructor below: keep the two in step (InfinityModel.ParamCountIsWhatTheModelPlaces).
  const int64_t C = cfg.embed_dim, D = cfg.embed_dim, H = cfg.num_heads, F = cfg.ffn_hidden();
  const int64_t Ct5 = cfg.text_channels, V = cfg.V(), dv = cfg.d_vae();
  ParamCount p;
  // text: cfg_uncond, text_norm, the attentive pool (q, kv, v_bias, proj), the cross-attention MLP
  p.other_replicated += static_cast<int64_t>(cfg.text_maxlen) * Ct5 + Ct5 + D + D + D + D + D;
  p.matmul_replicated += 2 * D * Ct5 + D * D + D * Ct5 + D * D;
  if (cfg.shared_aln) {
    p.matmul_replicated += 6 * C * D;
    p.other_replicated += 6 * C;
  }
  p.other_replicated += C + 15 * C + C + 2 * C + V;  // pos_start, lvl_embed, word_embed / head_nm / head biases
  p.matmul_replicated += C * dv + 2 * C * D + V * C;  // word_embed, head_nm, head
  for (int i = 0; i < cfg.depth; ++i) {
    if (cfg.shared_aln) {
      p.other_replicated += 6 * C;  // ada_gss
    } else {
      p.matmul_replicated += 6 * C * D;
      p.other_replicated += 6 * C;
    }
    p.matmul_sharded += 3 * C * C + C * C;          // sa.mat_qkv (by heads), sa.proj (by columns)
    p.other_sharded += 2 * C + (cfg.cos_attn ? H : 0);  // q_bias, v_bias, per-head scale_mul
    p.other_replicated += C + 2 * C + C + C;        // sa.proj bias, ca_norm, ca.proj bias, fc2 bias
    p.matmul_sharded += C * C + 2 * C * D + C * C;  // ca.mat_q, ca.mat_kv, ca.proj
    p.other_sharded += C + C;                       // ca.mat_q bias, ca.v_bias
    if (cfg.cross_attn_layer_scale >= 0) p.other_replicated += C;  // ca_gamma
    p.matmul_sharded += F * C + C * F;              // ffn.fc1 (by rows), ffn.fc2 (by columns)
    p.other_sharded += F;                           // fc1 bias
  }
  return p;
}

InfinityModel::InfinityModel(const InfinityConfig& cfg, const WeightLoader& wl, Communicator& comm)
    : cfg_(cfg), be_(wl.backend()), comm_(comm) {
  Backend& be = be_;
  const int tp = comm.size(), rank = comm.rank();
  const int C = cfg.embed_dim, D = cfg.embed_dim, H = cfg.num_heads, hd = cfg.head_dim(), F = cfg.ffn_hidden();
  const int Ct5 = cfg.text_channels;
  SKV_CHECK(H % tp == 0 && F % tp == 0, "tensor parallel size {} does not divide num_heads {} (and the FFN width {}) "
            "of {}; valid sizes: {}", tp, H, F, cfg.path, valid_tp_sizes(H, F));
  local_heads_ = H / tp;
  head_offset_ = rank * local_heads_;
  local_ffn_ = F / tp;
  const int64_t Cl = static_cast<int64_t>(local_heads_) * hd, c0 = static_cast<int64_t>(head_offset_) * hd;
  const int64_t f0 = static_cast<int64_t>(rank) * local_ffn_;

  cfg_uncond_ = wl.get("cfg_uncond", {cfg.text_maxlen, Ct5});
  text_norm_w_ = wl.get("text_norm.weight", {Ct5});
  const int Hp = cfg.pool_heads(), hdp = cfg.pool_head_dim();
  pool_q_ = wl.get("text_proj_for_sos.ca.mat_q", {1, Hp, hdp});
  pool_kv_w_ = wl.get("text_proj_for_sos.ca.mat_kv.weight", {2 * D, Ct5}, WeightUse::Matmul);
  pool_v_bias_ = wl.get("text_proj_for_sos.ca.v_bias", {D});
  pool_proj_w_ = wl.get("text_proj_for_sos.ca.proj.weight", {D, D}, WeightUse::Matmul);
  pool_proj_b_ = wl.get("text_proj_for_sos.ca.proj.bias", {D});
  ca0_w_ = wl.get("text_proj_for_ca.0.weight", {D, Ct5}, WeightUse::Matmul);
  ca0_b_ = wl.get("text_proj_for_ca.0.bias", {D});
  ca2_w_ = wl.get("text_proj_for_ca.2.weight", {D, D}, WeightUse::Matmul);
  ca2_b_ = wl.get("text_proj_for_ca.2.bias", {D});
  if (cfg.shared_aln) {
    shared_ada_w_ = wl.get("shared_ada_lin.1.weight", {6 * C, D}, WeightUse::Matmul);
    shared_ada_b_ = wl.get("shared_ada_lin.1.bias", {6 * C});
  }
  pos_start_ = wl.get("pos_start", {1, 1, C});
  lvl_embed_ = wl.get("lvl_embed.weight", {15, C});
  word_w_ = wl.get("word_embed.weight", {C, cfg.d_vae()}, WeightUse::Matmul);
  word_b_ = wl.get("word_embed.bias", {C});
  head_nm_w_ = wl.get("head_nm.ada_lin.1.weight", {2 * C, D}, WeightUse::Matmul);
  head_nm_b_ = wl.get("head_nm.ada_lin.1.bias", {2 * C});
  head_w_ = wl.get("head.weight", {cfg.V(), C}, WeightUse::Matmul);
  head_b_ = wl.get("head.bias", {cfg.V()});

  blocks_.resize(cfg.depth);
  for (int i = 0; i < cfg.depth; ++i) {
    auto& b = blocks_[i];
    const std::string p = cfg.block_prefix(i);
    if (cfg.shared_aln) {
      b.ada_gss = wl.get(p + "ada_gss", {1, 1, 6, C});
    } else {
      b.ada_w = wl.get(p + "ada_lin.1.weight", {6 * C, D}, WeightUse::Matmul);
      b.ada_b = wl.get(p + "ada_lin.1.bias", {6 * C});
    }
    b.qkv_w = wl.rows(p + "sa.mat_qkv.weight", {3 * C, C},
                      {{c0, c0 + Cl}, {C + c0, C + c0 + Cl}, {2 * C + c0, 2 * C + c0 + Cl}}, WeightUse::Matmul);
    b.q_bias = wl.rows(p + "sa.q_bias", {C}, {{c0, c0 + Cl}});
    b.v_bias = wl.rows(p + "sa.v_bias", {C}, {{c0, c0 + Cl}});
    if (cfg.cos_attn) {
      Tensor sm = wl.host(p + "sa.scale_mul_1H11", {1, H, 1, 1});
      Tensor hs = Tensor::empty({local_heads_}, DType::F32, MemCategory::Weights);
      const float max_mul = std::log(100.0f);  // torch.log(torch.tensor(100)).item()
      for (int h = 0; h < local_heads_; ++h) hs.f32()[h] = std::exp(std::fmin(sm.f32()[head_offset_ + h], max_mul));
      b.head_scale = be.device() == Device::CPU ? hs : be.upload(hs, MemCategory::Weights);
      weight_bytes_ += static_cast<int64_t>(hs.nbytes());
    }
    b.proj_w = wl.cols(p + "sa.proj.weight", {C, C}, c0, c0 + Cl, WeightUse::Matmul);
    b.proj_b = wl.get(p + "sa.proj.bias", {C});
    b.ca_norm_w = wl.get(p + "ca_norm.weight", {C});
    b.ca_norm_b = wl.get(p + "ca_norm.bias", {C});
    b.ca_q_w = wl.rows(p + "ca.mat_q.weight", {C, C}, {{c0, c0 + Cl}}, WeightUse::Matmul);
    b.ca_q_b = wl.rows(p + "ca.mat_q.bias", {C}, {{c0, c0 + Cl}});
    b.ca_kv_w = wl.rows(p + "ca.mat_kv.weight", {2 * C, D}, {{c0, c0 + Cl}, {C + c0, C + c0 + Cl}}, WeightUse::Matmul);
    b.ca_v_bias = wl.rows(p + "ca.v_bias", {C}, {{c0, c0 + Cl}});
    b.ca_proj_w = wl.cols(p + "ca.proj.weight", {C, C}, c0, c0 + Cl, WeightUse::Matmul);
    b.ca_proj_b = wl.get(p + "ca.proj.bias", {C});
    if (cfg.cross_attn_layer_scale >= 0) b.ca_gamma = wl.get(p + "ca_gamma", {C});
    b.fc1_w = wl.rows(p + "ffn.fc1.weight", {F, C}, {{f0, f0 + local_ffn_}}, WeightUse::Matmul);
    b.fc1_b = wl.rows(p + "ffn.fc1.bias", {F}, {{f0, f0 + local_ffn_}});
    b.fc2_w = wl.cols(p + "ffn.fc2.weight", {C, F}, f0, f0 + local_ffn_, WeightUse::Matmul);
    b.fc2_b = wl.get(p + "ffn.fc2.bias", {C});
  }
  weight_bytes_ += wl.bytes_loaded();
}

float InfinityModel::attn_scale() const {
  return cfg_.cos_attn ? 1.0f : 1.0f / std::sqrt(static_cast<float>(cfg_.head_dim())) / cfg_.attn_tau;
}

void InfinityModel::all_reduce(Tensor& t) const { tp_all_reduce(comm_, t); }

Tensor InfinityModel::ada_part(const Tensor& ada, int part) const { return ada_slot(be_, ada, part); }

void InfinityModel::pack_text_kv(const Tensor& kv, const std::vector<int64_t>& row_len, int H, int hd,
                                 const Tensor& v_bias, Tensor& k, Tensor& v) const {
  const int64_t R = static_cast<int64_t>(row_len.size());
  const int64_t Lmax = *std::max_element(row_len.begin(), row_len.end());
  const int64_t W = static_cast<int64_t>(H) * hd;
  SKV_CHECK(kv.dim(-1) == 2 * W, "internal: text K/V width {} for {} heads of {}", kv.dim(-1), H, hd);
  Tensor hk = Tensor::zeros({R, H, Lmax, hd}), hv = Tensor::zeros({R, H, Lmax, hd});
  const float* src = kv.f32();
  const float* vb = v_bias.f32();
  int64_t tok = 0;
  for (int64_t r = 0; r < R; ++r)
    for (int64_t t = 0; t < row_len[r]; ++t, ++tok)
      for (int h = 0; h < H; ++h) {
        const float* ks = src + tok * 2 * W + h * hd;
        const float* vs = src + tok * 2 * W + W + h * hd;
        float* kd = hk.f32() + ((r * H + h) * Lmax + t) * hd;
        float* vd = hv.f32() + ((r * H + h) * Lmax + t) * hd;
        for (int d = 0; d < hd; ++d) {
          kd[d] = ks[d];
          vd[d] = vs[d] + vb[h * hd + d];
        }
      }
  k = be_.device() == Device::CPU ? hk : be_.upload(hk, MemCategory::Activations);
  v = be_.device() == Device::CPU ? hv : be_.upload(hv, MemCategory::Activations);
}

InfinityModel::Cond InfinityModel::prepare_cond(const InfinityText& text, bool with_uncond) const {
  const int C = cfg_.embed_dim, D = cfg_.embed_dim, Ct5 = cfg_.text_channels;
  const int64_t B = static_cast<int64_t>(text.lens.size());
  SKV_CHECK(B > 0, "no prompts to generate");
  int64_t N = 0;
  for (int64_t len : text.lens) {
    SKV_CHECK(len >= 1 && len <= max_text_len(), "a prompt has {} text tokens; this model takes 1 to {} (cfg_uncond "
              "rows)", len, max_text_len());
    N += len;
  }
  SKV_CHECK(text.kv_compact.ndim() == 2 && text.kv_compact.dim(0) == N && text.kv_compact.dim(1) == Ct5,
            "text embeddings are {}, expected [{}, {}] (sum of the prompt lengths x text_channels)",
            text.kv_compact.describe(), N, Ct5);
  Cond c;
  c.batch = B;
  c.rows = with_uncond ? 2 * B : B;
  const int64_t R = c.rows;
  c.row_len = text.lens;
  if (with_uncond) c.row_len.insert(c.row_len.end(), text.lens.begin(), text.lens.end());
  const int64_t Ntot = with_uncond ? 2 * N : N;

  // cat(kv_compact, cfg_uncond[:len_i] for every prompt i)
  Tensor all = Tensor::empty({Ntot, Ct5});
  Tensor kvc = text.kv_compact.dtype() == DType::F32 ? text.kv_compact : text.kv_compact.to_f32();
  std::memcpy(all.f32(), kvc.f32(), static_cast<size_t>(N * Ct5) * sizeof(float));
  if (with_uncond) {
    Tensor unc = be_.download(cfg_uncond_);
    int64_t at = N;
    for (int64_t len : text.lens) {
      std::memcpy(all.f32() + at * Ct5, unc.f32(), static_cast<size_t>(len * Ct5) * sizeof(float));
      at += len;
    }
  }
  Tensor dall = be_.device() == Device::CPU ? all : be_.upload(all, MemCategory::Activations);
  c.text_norm = be_.empty({Ntot, Ct5});
  be_.rms_norm(dall, &text_norm_w_, cfg_.norm_eps, c.text_norm);

  // text_proj_for_sos: one learned query per head attends to each row's text.
  {
    const int Hp = cfg_.pool_heads(), hdp = cfg_.pool_head_dim();
    Tensor kvp = be_.empty({Ntot, 2 * D});
    be_.linear(c.text_norm, pool_kv_w_, nullptr, kvp);
    Tensor pk, pv;
    pack_text_kv(be_.download(kvp), c.row_len, Hp, hdp, be_.download(pool_v_bias_), pk, pv);
    Tensor q = Tensor::empty({R, Hp, 1, hdp});
    Tensor mq = be_.download(pool_q_);
    for (int64_t r = 0; r < R; ++r) std::memcpy(q.f32() + r * Hp * hdp, mq.f32(), static_cast<size_t>(Hp * hdp) * sizeof(float));
    Tensor dq = be_.device() == Device::CPU ? q : be_.upload(q, MemCategory::Activations);
    Tensor att = be_.empty({R, 1, D});
    KVSegment seg{&pk, &pv, 0, c.row_len};
    be_.attention(dq, {seg}, 1.0f / std::sqrt(static_cast<float>(hdp)), att);
    c.cond_BD = be_.empty({R, D});
    be_.linear(att.reshape({R, D}), pool_proj_w_, &pool_proj_b_, c.cond_BD);
  }
  // text_proj_for_ca: Linear -> GELU(tanh) -> Linear
  {
    Tensor t0 = be_.empty({Ntot, D});
    be_.linear(c.text_norm, ca0_w_, &ca0_b_, t0);
    be_.gelu_tanh(t0);
    c.ca_kv = be_.empty({Ntot, D});
    be_.linear(t0, ca2_w_, &ca2_b_, c.ca_kv);
  }
  Tensor act = be_.empty({R, D});
  be_.silu(c.cond_BD, act);
  if (cfg_.shared_aln) {
    c.gss = be_.empty({R, 6, C});
    Tensor gv = c.gss.reshape({R, 6 * C});
    be_.linear(act, shared_ada_w_, &shared_ada_b_, gv);
  }
  for (const auto& b : blocks_) {
    Tensor ada = be_.empty({R, 6, C});
    if (cfg_.shared_aln) {
      be_.add(c.gss, b.ada_gss, ada);  // (ada_gss + cond_BD_or_gss), [1,1,6,C] broadcast over rows
    } else {
      Tensor av = ada.reshape({R, 6 * C});
      be_.linear(act, b.ada_w, &b.ada_b, av);
    }
    c.ada.push_back(ada);
  }
  c.head_ada = be_.empty({R, 2, C});
  Tensor hv = c.head_ada.reshape({R, 2 * C});
  be_.linear(act, head_nm_w_, &head_nm_b_, hv);
  // Every block's cross-attention K/V of the text (this rank's heads).
  const int64_t Cl = static_cast<int64_t>(local_heads_) * cfg_.head_dim();
  Tensor kvb = be_.empty({Ntot, 2 * Cl});
  for (const auto& b : blocks_) {
    be_.linear(c.ca_kv, b.ca_kv_w, nullptr, kvb);
    Tensor k, v;
    pack_text_kv(be_.download(kvb), c.row_len, local_heads_, cfg_.head_dim(), be_.download(b.ca_v_bias), k, v);
    c.ca_k.push_back(k);
    c.ca_v.push_back(v);
  }
  return c;
}

Tensor InfinityModel::first_input(const Cond& cond) const {
  const int64_t R = cond.rows, C = cfg_.embed_dim;
  Tensor x = be_.empty({R, 1, C});
  be_.add(cond.cond_BD.reshape({R, 1, C}), pos_start_, x);
  return x;
}

Tensor InfinityModel::embed_input(const Tensor& vae_in, int64_t rows) const {
  const int64_t B = vae_in.dim(0), l = vae_in.dim(1), C = cfg_.embed_dim;
  SKV_CHECK(vae_in.dim(2) == cfg_.d_vae() && rows % B == 0, "embed_input: {} for {} rows", vae_in.describe(), rows);
  Tensor e = be_.empty({B, l, C});
  be_.linear(vae_in, word_w_, &word_b_, e);
  if (rows == B) return e;
  Tensor x = be_.empty({rows, l, C});
  for (int64_t r = 0; r < rows; r += B) {
    Tensor part = x.slice0(r, r + B);
    be_.copy(e, part);
  }
  return x;
}

void InfinityModel::self_attention(Tensor& x, const std::vector<PackedPart>& parts,
                                   const std::vector<ScaleItem>& items, const Block& b, int layer) const {
  const int64_t T = x.dim(0), C = cfg_.embed_dim, hd = cfg_.head_dim(), Hl = local_heads_;
  const Tensor h = adaln_norm(be_, x, parts, 2, 4, cfg_.norm_eps);
  Tensor qkv = be_.empty({T, 3 * Hl * hd});
  be_.linear(h, b.qkv_w, nullptr, qkv);
  Tensor att = be_.empty({T, Hl * hd});
  std::vector<Tensor> qs(items.size()), q_raws(items.size()), att_is(items.size());
  std::vector<AttentionJob> jobs(items.size());
  for (size_t i = 0; i < items.size(); ++i) {  // attention: each request against its own cache, one call
    const PackedPart& p = parts[i];
    const ScaleArgs& a = *items[i].args;
    MultiScaleKVCache& cache = *a.cache;
    // q_raw: q of mat_qkv(x) without bias, norm or RoPE (the released ScaleKV code)
    split_request_qkv(be_, packed_view(qkv, p), b.q_bias, b.v_bias, cfg_.cos_attn ? &b.head_scale : nullptr,
                      a.policy->queries().raw, cache, qs[i], q_raws[i]);
    Tensor& q = qs[i];
    const int64_t l = p.len;
    std::vector<int64_t> pos(static_cast<size_t>(l));
    for (int64_t t = 0; t < l; ++t) pos[t] = a.schedule->offset(items[i].si) + t;
    be_.rope(q, *a.rope, pos);
    be_.rope(cache.cur_k(), *a.rope, pos);
    jobs[i].segs = cache.store_segments(layer);
    jobs[i].segs.push_back({&cache.cur_k(), &cache.cur_v(), l, {}});
    att_is[i] = packed_view(att, p);
    jobs[i].q = &q;
    jobs[i].out = &att_is[i];
  }
  be_.attention_varlen(jobs, attn_scale());
  Tensor y = be_.empty({T, C});
  be_.linear(att, b.proj_w, nullptr, y);
  all_reduce(y);  // one reduction for every request of the step
  be_.add(y, b.proj_b, y);
  for (size_t i = 0; i < items.size(); ++i) {
    const PackedPart& p = parts[i];
    Tensor xp = packed_view(x, p);
    const Tensor gamma1 = ada_part(*p.ada, 0);
    be_.add_gated(xp, packed_view(y, p), &gamma1);
    const ScaleItem& it = items[i];
    const ScaleArgs& a = *it.args;
    const QueryNeeds needs = a.policy->queries();
    const Tensor* q_raw = needs.raw ? &q_raws[i] : nullptr;
    const Tensor* q_attn = needs.attention ? &qs[i] : nullptr;
    if (it.si + 1 < a.schedule->num_scales()) {  // the last scale's K/V are never stored
      a.cache->update(layer, it.si, *a.policy, *a.schedule, q_raw, q_attn, attn_scale(), head_offset_);
    } else if (a.select_at_last_scale) {  // parity checks: the selection the official code makes there too
      a.cache->select_only(layer, it.si, *a.policy, *a.schedule, q_raw, q_attn, attn_scale(), head_offset_);
    }
  }
}

void InfinityModel::cross_attention(Tensor& x, const std::vector<PackedPart>& parts,
                                    const std::vector<ScaleItem>& items, const Block& b, int layer) const {
  const int64_t T = x.dim(0), C = cfg_.embed_dim, hd = cfg_.head_dim(), Hl = local_heads_;
  Tensor h = be_.empty({T, C});
  be_.layer_norm(x, &b.ca_norm_w, &b.ca_norm_b, cfg_.norm_eps, h);
  Tensor ql = be_.empty({T, Hl * hd});
  be_.linear(h, b.ca_q_w, &b.ca_q_b, ql);
  Tensor att = be_.empty({T, Hl * hd});
  std::vector<Tensor> qs(items.size()), att_is(items.size());
  std::vector<AttentionJob> jobs(items.size());
  for (size_t i = 0; i < items.size(); ++i) {  // each request attends to its own text, one call for all
    const PackedPart& p = parts[i];
    const Cond& cond = *items[i].cond;
    const int64_t R = p.rows, l = p.len;
    qs[i] = be_.empty({R, Hl, l, hd});
    be_.to_heads(packed_view(ql, p), nullptr, qs[i]);
    SKV_CHECK(static_cast<int64_t>(cond.row_len.size()) >= R, "internal: {} text rows for {} rows", cond.row_len.size(),
              R);
    jobs[i].segs = {KVSegment{&cond.ca_k[layer], &cond.ca_v[layer], 0,
                              std::vector<int64_t>(cond.row_len.begin(), cond.row_len.begin() + R)}};
    att_is[i] = packed_view(att, p);
    jobs[i].q = &qs[i];
    jobs[i].out = &att_is[i];
  }
  be_.attention_varlen(jobs, 1.0f / std::sqrt(static_cast<float>(hd)));
  Tensor y = be_.empty({T, C});
  be_.linear(att, b.ca_proj_w, nullptr, y);
  all_reduce(y);  // one reduction for every request of the step
  be_.add(y, b.ca_proj_b, y);
  Tensor x1 = x.reshape({1, T, C});  // one gate row (ca_gamma) for every token
  be_.add_gated(x1, y.reshape({1, T, C}), b.ca_gamma.defined() ? &b.ca_gamma : nullptr);
}

void InfinityModel::forward_scales(std::vector<ScaleItem>& items) const {
  SKV_CHECK(!items.empty(), "internal: a scale step with no requests");
  const int64_t C = cfg_.embed_dim;
  std::vector<Tensor> xs;
  for (size_t i = 0; i < items.size(); ++i) {
    const ScaleItem& it = items[i];
    SKV_CHECK(it.x.ndim() == 3 && it.x.dim(2) == C && it.cond && it.args && it.args->schedule && it.args->rope &&
                  it.args->cache && it.args->policy,
              "internal: scale item {} is incomplete ({})", i, it.x.describe());
    SKV_CHECK(it.si < lvl_embed_.dim(0), "scale {} has no level embedding (the model has {})", it.si, lvl_embed_.dim(0));
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
  for (int layer = 0; layer < cfg_.depth; ++layer) {
    if (layer % cfg_.blocks_per_chunk() == 0 && (layer == 0 || !cfg_.lvl_embed_only_first_block))
      for (size_t i = 0; i < items.size(); ++i) {
        Tensor xp = packed_view(x, parts[i]);
        be_.add(xp, lvl_embed_.slice0(items[i].si, items[i].si + 1), xp);
        if (layer == 0 && items[i].args->observer) items[i].args->observer->on_input(items[i].si, be_.download(xp));
      }
    const Block& b = blocks_[layer];
    for (size_t i = 0; i < items.size(); ++i) parts[i].ada = &items[i].cond->ada[layer];
    self_attention(x, parts, items, b, layer);
    cross_attention(x, parts, items, b, layer);
    adaln_ffn_packed(be_, comm_, x, parts, b.fc1_w, b.fc1_b, b.fc2_w, b.fc2_b, local_ffn_, cfg_.norm_eps);
    if (check) check_finite(x, fmt::format("{}, block {}: the hidden state", where(), layer));
    for (size_t i = 0; i < items.size(); ++i) {
      const ScaleItem& it = items[i];
      const ScaleArgs& a = *it.args;
      Tensor xp = packed_view(x, parts[i]);
      if (a.observer && a.observer->wants_block_outputs()) a.observer->on_block_output(it.si, layer, be_.download(xp));
      const int64_t B = it.cond->batch;
      if (a.cfg != 1.0 && parts[i].rows == 2 * B &&
          std::find(a.cfg_layers.begin(), a.cfg_layers.end(), layer) != a.cfg_layers.end()) {
        // last_stage = cfg * x[:B] + (1 - cfg) * x[B:], then duplicated
        Tensor top = xp.slice0(0, B), bottom = xp.slice0(B, 2 * B);
        Tensor mixed = be_.empty(top.shape());
        be_.axpby(top, static_cast<float>(a.cfg), bottom, static_cast<float>(1.0 - a.cfg), mixed);
        be_.copy(mixed, top);
        be_.copy(mixed, bottom);
      }
    }
  }
  for (size_t i = 0; i < items.size(); ++i) items[i].x = packed_view(x, parts[i]);
}

void InfinityModel::forward_scale(Tensor& x, const Cond& cond, int si, const ScaleArgs& a) const {
  std::vector<ScaleItem> items{ScaleItem{x, &cond, si, &a}};
  forward_scales(items);
  x = items[0].x;
}

Tensor InfinityModel::logits(const Tensor& x, const Cond& cond, int64_t rows) const {
  const int64_t l = x.dim(1), C = cfg_.embed_dim;
  const Tensor xs = rows == x.dim(0) ? x : x.slice0(0, rows);
  const Tensor ada = rows == cond.head_ada.dim(0) ? cond.head_ada : cond.head_ada.slice0(0, rows);
  Tensor h = be_.empty({rows, l, C});
  be_.layer_norm(xs, nullptr, nullptr, cfg_.norm_eps, h);
  be_.modulate(h, ada_part(ada, 0), ada_part(ada, 1), h);
  Tensor out = be_.empty({rows, l, cfg_.V()});
  be_.linear(h, head_w_, &head_b_, out);
  return out;
}

}  // namespace skv
