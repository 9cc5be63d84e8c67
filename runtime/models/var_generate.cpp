#include "runtime/models/var_generate.h"

#include <cmath>

#include "runtime/check.h"
#include "runtime/models/request_kv.h"
#include "runtime/rng.h"

namespace skv {

std::vector<std::vector<uint8_t>> images_to_rgb8(const Tensor& images) {
  const int64_t B = images.dim(0), C = images.dim(1), H = images.dim(2), W = images.dim(3);
  SKV_CHECK(C == 3, "images_to_rgb8: expected 3 channels, got {}", images.describe());
  std::vector<std::vector<uint8_t>> out(B, std::vector<uint8_t>(static_cast<size_t>(H * W * 3)));
  const float* p = images.f32();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t i = 0; i < H * W; ++i) {
        const float v = std::floor(p[(b * 3 + c) * H * W + i] * 255.0f + 0.5f);
        out[b][i * 3 + c] = static_cast<uint8_t>(std::fmin(std::fmax(v, 0.0f), 255.0f));
      }
  return out;
}

GenerateResult var_generate(const VarModel& model, const VQVAE& vae, const VarRequest& req, const VarRunOptions& opt) {
  const VarConfig& cfg = model.config();
  Backend& be = model.backend();
  const int B = static_cast<int>(req.labels.size());
  SKV_CHECK(B > 0, "no labels to generate");
  for (int64_t lab : req.labels)
    SKV_CHECK(lab >= 0 && lab < cfg.num_classes, "class label {} outside [0, {})", lab, cfg.num_classes);
  std::vector<uint32_t> ids = req.image_ids;
  if (ids.empty())
    for (int b = 0; b < B; ++b) ids.push_back(static_cast<uint32_t>(b));
  SKV_CHECK(static_cast<int>(ids.size()) == B, "image_ids: {} for {} labels", ids.size(), B);

  const Schedule sched = cfg.schedule();
  const int S = sched.num_scales();
  GenerateResult res;
  RequestKV kv(be, model.comm(), opt.policy, sched, cfg.depth, 2 * B, model.local_heads(), cfg.head_dim(), res);
  KVPolicy* policy = &kv.policy();
  MultiScaleKVCache& cache = kv.cache();

  std::vector<int64_t> class_ids(req.labels);
  for (int b = 0; b < B; ++b) class_ids.push_back(cfg.num_classes);
  const VarModel::Cond cond = model.prepare_cond(class_ids);
  Tensor x = model.first_input(cond);
  Tensor f_hat = be.zeros({B, cfg.Cvae, cfg.patch_nums.back(), cfg.patch_nums.back()});
  const double t_start = now_seconds();

  for (int si = 0; si < S; ++si) {
    const double t0 = now_seconds();
    const int pn = cfg.patch_nums[si];
    const int64_t l = static_cast<int64_t>(pn) * pn;
    if (opt.observer) opt.observer->on_input(si, be.download(x));
    policy->begin_scale(si);
    cache.begin_scale(l, sched.offset(si));
    model.forward_scale(x, cond, si, cache, *policy, sched);
    cache.end_scale();
    policy->end_scale(si);
    Tensor logits = be.download(model.logits(x, cond));  // [2B, l, V]
    check_finite(logits, fmt::format("scale {} ({}x{}): the logits", si, pn, pn));  // on every backend
    if (opt.observer) opt.observer->on_logits_raw(si, logits);
    // CFG: (1 + t) * cond - t * uncond, t = cfg * si / (S - 1)
    const double ratio = S == 1 ? 0.0 : static_cast<double>(si) / (S - 1);
    const double td = static_cast<double>(req.cfg) * ratio;  // PyTorch casts the double scalars to float
    const float a = static_cast<float>(1.0 + td), t = static_cast<float>(td);
    Tensor mixed = Tensor::empty({B, l, cfg.V});
    {
      const float* lp = logits.f32();
      float* mp = mixed.f32();
      const int64_t n = B * l * cfg.V;
      for (int64_t i = 0; i < n; ++i) mp[i] = a * lp[i] - t * lp[n + i];
    }
    if (opt.observer) opt.observer->on_logits(si, mixed);
    std::vector<int64_t> idx(static_cast<size_t>(B * l));
    if (opt.teacher) {
      SKV_CHECK(static_cast<int>(opt.teacher->size()) > si && static_cast<int64_t>((*opt.teacher)[si].size()) == B * l,
                "teacher tokens for scale {} must have {} entries", si, B * l);
      idx = (*opt.teacher)[si];
    } else {
      Tensor work = mixed.clone(MemCategory::Workspace);
      for (int b = 0; b < B; ++b)
        for (int64_t j = 0; j < l; ++j) {
          const float u = uniform01(req.seed, ids[b], static_cast<uint32_t>(si), static_cast<uint32_t>(j), 0);
          idx[b * l + j] = sample_logits(work.f32() + (b * l + j) * cfg.V, cfg.V, req.sampling, u);
        }
    }
    // Every rank of the TP group samples the same tokens from the same (bit-identical) logits; rank 0's
    // are broadcast anyway, so a difference in replicated arithmetic can never split the group.
    if (model.comm().size() > 1) model.comm().broadcast_host(idx.data(), idx.size() * sizeof(int64_t), 0);
    if (opt.observer) opt.observer->on_tokens(si, idx);
    res.tokens.push_back(idx);
    Tensor h = vae.lookup(idx, B, pn);
    Tensor next = vae.add_scale(si, f_hat, h);
    if (si + 1 < S) {
      const int64_t ln = static_cast<int64_t>(cfg.patch_nums[si + 1]) * cfg.patch_nums[si + 1];
      Tensor vin = be.empty({B, ln, cfg.Cvae});
      be.transpose_last2(next.reshape({B, cfg.Cvae, ln}), vin);
      if (opt.observer) opt.observer->on_vae_input(si + 1, be.download(vin));
      x = model.embed_input(vin, si + 1);
    }
    be.synchronize();
    ScaleTiming st;
    st.scale = si;
    st.tokens = l;
    st.seconds = now_seconds() - t0;
    st.kv_store_tokens = kv.store_tokens();
    res.timings.push_back(st);
    if (opt.progress) opt.progress(si, S, st.seconds);
  }
  res.transformer_seconds = now_seconds() - t_start;
  kv.finish(res);
  if (opt.decode) {
    const double t0 = now_seconds();
    const int64_t e = opt.decode_end < 0 ? B : opt.decode_end;
    SKV_CHECK(0 <= opt.decode_begin && opt.decode_begin <= e && e <= B, "decode images [{}, {}) of a batch of {}",
              opt.decode_begin, e, B);
    res.images = vae.decode(opt.decode_begin == 0 && e == B ? f_hat : f_hat.slice0(opt.decode_begin, e));
    check_finite(res.images.device() == Device::CPU ? res.images : be.download(res.images), "the decoded images");
    res.decode_seconds = now_seconds() - t0;
  }
  return res;
}

}  // namespace skv
