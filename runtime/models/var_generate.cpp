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

namespace {

std::vector<uint32_t> image_ids_of(const VarRequest& req) {
  std::vector<uint32_t> ids = req.image_ids;
  if (ids.empty())
    for (size_t b = 0; b < req.labels.size(); ++b) ids.push_back(static_cast<uint32_t>(b));
  return ids;
}

// Checks the request before anything is allocated for it.
const VarRequest& checked(const VarModel& model, VarRequest& req) {
  const VarConfig& cfg = model.config();
  const size_t B = req.labels.size();
  SKV_CHECK(B > 0, "no labels to generate");
  for (int64_t lab : req.labels)
    SKV_CHECK(lab >= 0 && lab < cfg.num_classes, "class label {} outside [0, {})", lab, cfg.num_classes);
  req.image_ids = image_ids_of(req);
  SKV_CHECK(req.image_ids.size() == B, "image_ids: {} for {} labels", req.image_ids.size(), B);
  return req;
}

}  // namespace

VarGeneration::VarGeneration(const VarModel& model, const VQVAE& vae, VarRequest req, VarRunOptions opt,
                             KVPagePool* kv_pages)
    : model_(model),
      vae_(vae),
      req_(checked(model, req)),
      opt_(std::move(opt)),
      sched_(model.config().schedule()),
      kv_(model.backend(), model.comm(), opt_.policy, sched_, model.config().depth, 2 * images(), model.local_heads(),
          model.config().head_dim(), res_, kv_pages) {
  const VarConfig& cfg = model.config();
  const int B = images();
  std::vector<int64_t> class_ids(req_.labels);
  for (int b = 0; b < B; ++b) class_ids.push_back(cfg.num_classes);
  cond_ = model.prepare_cond(class_ids);
  x_ = model.first_input(cond_);
  f_hat_ = model.backend().zeros({B, cfg.Cvae, cfg.patch_nums.back(), cfg.patch_nums.back()});
  t_start_ = now_seconds();
}

void VarGeneration::step(const std::vector<VarGeneration*>& batch) {
  SKV_CHECK(!batch.empty(), "internal: an empty VAR step");
  const VarModel& model = batch[0]->model_;
  const VarConfig& cfg = model.config();
  Backend& be = model.backend();
  std::vector<VarModel::ScaleItem> items;
  for (VarGeneration* g : batch) {
    SKV_CHECK(&g->model_ == &model && !g->done() && !g->finished_, "internal: a VAR step over mixed or finished requests");
    g->t_scale_ = now_seconds();
    const int si = g->si_;
    const int64_t l = static_cast<int64_t>(cfg.patch_nums[si]) * cfg.patch_nums[si];
    if (g->opt_.observer) g->opt_.observer->on_input(si, be.download(g->x_));
    g->kv_.policy().begin_scale(si);
    g->kv_.begin_scale(l, g->sched_.offset(si));
    items.push_back({g->x_, &g->cond_, si, &g->kv_.cache(), &g->kv_.policy(), &g->sched_});
  }
  model.forward_scales(items);

  // CFG and sampling of every generation; the TP group then broadcasts all their tokens once.
  std::vector<std::vector<int64_t>> tokens(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    VarGeneration& g = *batch[i];
    g.x_ = items[i].x;
    g.kv_.cache().end_scale();
    const int si = g.si_, S = g.num_scales(), B = g.images();
    g.kv_.policy().end_scale(si);
    const int pn = cfg.patch_nums[si];
    const int64_t l = static_cast<int64_t>(pn) * pn;
    Tensor logits = be.download(model.logits(g.x_, g.cond_));  // [2B, l, V]
    check_finite(logits, fmt::format("scale {} ({}x{}): the logits", si, pn, pn));  // on every backend
    if (g.opt_.observer) g.opt_.observer->on_logits_raw(si, logits);
    // CFG: (1 + t) * cond - t * uncond, t = cfg * si / (S - 1)
    const double ratio = S == 1 ? 0.0 : static_cast<double>(si) / (S - 1);
    const double td = static_cast<double>(g.req_.cfg) * ratio;  // PyTorch casts the double scalars to float
    const float a = static_cast<float>(1.0 + td), t = static_cast<float>(td);
    Tensor mixed = Tensor::empty({B, l, cfg.V});
    {
      const float* lp = logits.f32();
      float* mp = mixed.f32();
      const int64_t n = B * l * cfg.V;
      for (int64_t k = 0; k < n; ++k) mp[k] = a * lp[k] - t * lp[n + k];
    }
    if (g.opt_.observer) g.opt_.observer->on_logits(si, mixed);
    std::vector<int64_t>& idx = tokens[i];
    if (g.opt_.teacher) {
      SKV_CHECK(static_cast<int>(g.opt_.teacher->size()) > si && static_cast<int64_t>((*g.opt_.teacher)[si].size()) == B * l,
                "teacher tokens for scale {} must have {} entries", si, B * l);
      idx = (*g.opt_.teacher)[si];
    } else {
      Tensor work = mixed.clone(MemCategory::Workspace);  // sample_logits works in place
      float* mp = work.f32();
      for (int b = 0; b < B; ++b)
        for (int64_t j = 0; j < l; ++j) {
          const float u = uniform01(g.req_.seed, g.req_.image_ids[b], static_cast<uint32_t>(si), static_cast<uint32_t>(j), 0);
          idx.push_back(sample_logits(mp + (b * l + j) * cfg.V, cfg.V, g.req_.sampling, u));
        }
    }
  }
  broadcast_parts(model.comm(), tokens);

  for (size_t i = 0; i < batch.size(); ++i) {
    VarGeneration& g = *batch[i];
    const int si = g.si_, S = g.num_scales(), B = g.images();
    const int pn = cfg.patch_nums[si];
    std::vector<int64_t>& idx = tokens[i];
    if (g.opt_.observer) g.opt_.observer->on_tokens(si, idx);
    Tensor h = g.vae_.lookup(idx, B, pn);
    Tensor next = g.vae_.add_scale(si, g.f_hat_, h);
    g.res_.tokens.push_back(std::move(idx));
    if (si + 1 < S) {
      const int64_t ln = static_cast<int64_t>(cfg.patch_nums[si + 1]) * cfg.patch_nums[si + 1];
      Tensor vin = be.empty({B, ln, cfg.Cvae});
      be.transpose_last2(next.reshape({B, cfg.Cvae, ln}), vin);
      if (g.opt_.observer) g.opt_.observer->on_vae_input(si + 1, be.download(vin));
      g.x_ = model.embed_input(vin, si + 1);
    }
  }
  be.synchronize();
  const double t_end = now_seconds();
  for (VarGeneration* g : batch) {
    ScaleTiming st;
    st.scale = g->si_;
    st.tokens = static_cast<int64_t>(cfg.patch_nums[g->si_]) * cfg.patch_nums[g->si_];
    st.seconds = t_end - g->t_scale_;
    st.kv_store_tokens = g->kv_.store_tokens();
    g->res_.timings.push_back(st);
    ++g->si_;
    if (g->opt_.progress) g->opt_.progress(st.scale, g->num_scales(), st.seconds);
    if (g->done()) g->res_.transformer_seconds = t_end - g->t_start_;
  }
}

Tensor VarGeneration::preview() const {
  Backend& be = model_.backend();
  Tensor img = vae_.decode(f_hat_);
  return img.device() == Device::CPU ? img : be.download(img);
}

GenerateResult VarGeneration::finish() {
  SKV_CHECK(done() && !finished_, "internal: finish() of a VAR generation at scale {} of {}{}", si_, num_scales(),
            finished_ ? " (finished already)" : "");
  finished_ = true;
  kv_.finish(res_);
  if (opt_.decode) {
    Backend& be = model_.backend();
    const double t0 = now_seconds();
    const int64_t B = images(), e = opt_.decode_end < 0 ? B : opt_.decode_end;
    SKV_CHECK(0 <= opt_.decode_begin && opt_.decode_begin <= e && e <= B, "decode images [{}, {}) of a batch of {}",
              opt_.decode_begin, e, B);
    res_.images = vae_.decode(opt_.decode_begin == 0 && e == B ? f_hat_ : f_hat_.slice0(opt_.decode_begin, e));
    check_finite(res_.images.device() == Device::CPU ? res_.images : be.download(res_.images), "the decoded images");
    res_.decode_seconds = now_seconds() - t0;
  }
  return std::move(res_);
}

GenerateResult var_generate(const VarModel& model, const VQVAE& vae, const VarRequest& req, const VarRunOptions& opt) {
  VarGeneration g(model, vae, req, opt);
  while (!g.done()) VarGeneration::step({&g});
  return g.finish();
}

}  // namespace skv
