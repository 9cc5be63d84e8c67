#include "runtime/models/infinity_generate.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/check.h"
#include "runtime/models/request_kv.h"
#include "runtime/rng.h"

namespace skv {

namespace {

std::vector<double> per_scale(const std::vector<double>& v, int S, const char* what) {
  SKV_CHECK(!v.empty(), "{}: no value given", what);
  if (v.size() == 1) return std::vector<double>(static_cast<size_t>(S), v[0]);
  SKV_CHECK(static_cast<int>(v.size()) >= S, "{}: {} values for {} scales (give one value or one per scale)", what,
            v.size(), S);
  return std::vector<double>(v.begin(), v.begin() + S);
}

// Checks the request before anything is allocated for it; fills in the image ids and one cfg and tau
// per scale.
const InfinityRequest& checked(const InfinityModel& model, InfinityRequest& req) {
  const InfinityConfig& cfg = model.config();
  const size_t B = req.text.lens.size();
  SKV_CHECK(B > 0, "no prompts to generate");
  if (req.image_ids.empty())
    for (size_t b = 0; b < B; ++b) req.image_ids.push_back(static_cast<uint32_t>(b));
  SKV_CHECK(req.image_ids.size() == B, "image_ids: {} for {} prompts", req.image_ids.size(), B);
  const Schedule& sched = req.schedule;
  const int S = sched.num_scales();
  SKV_CHECK(S >= 1 && S <= 15, "a schedule of {} scales; Infinity has level embeddings for 1 to 15", S);
  for (int si = 0; si < S; ++si) SKV_CHECK(sched[si].t == 1, "scale {} has t = {}; images need t = 1", si, sched[si].t);
  SKV_CHECK(sched[0].h == 1 && sched[0].w == 1, "the first scale must be 1x1 (the text token), got {}x{}", sched[0].h,
            sched[0].w);
  req.cfg_list = per_scale(req.cfg_list, S, "cfg");
  req.tau_list = per_scale(req.tau_list, S, "tau");
  for (double t : req.tau_list) SKV_CHECK(t > 0, "tau {} must be positive", t);
  for (int item : req.cfg_insertion_layer) {
    SKV_CHECK(item <= 0,
              "cfg_insertion_layer {} is not supported (0: CFG on logits; -k: on the output of block depth - k)", item);
    SKV_CHECK(cfg.depth + item > 0, "cfg_insertion_layer {} is not valid for depth {}", item, cfg.depth);
  }
  return req;
}

// Transformer rows: the images, and as many unconditional rows when CFG acts at any scale.
int64_t rows_of(const InfinityRequest& req) { return infinity_rows(req, static_cast<int64_t>(req.text.lens.size())); }

// The 2x2 spatial patchify of the 8B model as one index map: element (b, y, x, c, i, j) is at `patched`
// in idx [B, h, w, 4d] (channel c * 4 + i * 2 + j) and at `plain` in [B, 2h, 2w, d]. Unpatchify copies
// patched -> plain (permute [B, 4d, h, w] + pixel_shuffle(2)), patchify the reverse.
std::vector<uint8_t> permute_patches(const std::vector<uint8_t>& bits, int B, int h, int w, int d, bool to_plain) {
  SKV_CHECK(static_cast<int64_t>(bits.size()) == static_cast<int64_t>(B) * h * w * 4 * d, "{}: {} bits",
            to_plain ? "unpatchify" : "patchify", bits.size());
  std::vector<uint8_t> out(bits.size());
  const int W2 = 2 * w;
  for (int b = 0; b < B; ++b)
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int c = 0; c < d; ++c)
          for (int i = 0; i < 2; ++i)
            for (int j = 0; j < 2; ++j) {
              const int64_t patched = ((static_cast<int64_t>(b) * h + y) * w + x) * 4 * d + c * 4 + i * 2 + j;
              const int64_t plain = ((static_cast<int64_t>(b) * 2 * h + 2 * y + i) * W2 + 2 * x + j) * d + c;
              if (to_plain)
                out[plain] = bits[patched];
              else
                out[patched] = bits[plain];
            }
  return out;
}

}  // namespace

std::vector<uint8_t> infinity_unpatchify_bits(const std::vector<uint8_t>& bits, int B, int h, int w, int d) {
  return permute_patches(bits, B, h, w, d, true);
}

std::vector<uint8_t> infinity_patchify_bits(const std::vector<uint8_t>& bits, int B, int h, int w, int d) {
  return permute_patches(bits, B, h, w, d, false);
}

std::vector<std::vector<uint8_t>> infinity_images_to_rgb8(const Tensor& images) {
  const int64_t B = images.dim(0), C = images.dim(1), H = images.dim(2), W = images.dim(3);
  SKV_CHECK(C == 3, "infinity_images_to_rgb8: expected 3 channels, got {}", images.describe());
  std::vector<std::vector<uint8_t>> out(B, std::vector<uint8_t>(static_cast<size_t>(H * W * 3)));
  const float* p = images.f32();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t i = 0; i < H * W; ++i) {
        const float v = p[(b * 3 + c) * H * W + i] * 255.0f;  // .mul_(255).to(torch.uint8): truncation
        out[b][i * 3 + c] = static_cast<uint8_t>(std::fmin(std::fmax(v, 0.0f), 255.0f));
      }
  return out;
}

InfinityRequest infinity_request_defaults(const InfinityConfig& cfg, const Schedule& schedule) {
  InfinityRequest req;
  req.schedule = schedule;
  req.cfg_list = {cfg.cfg};
  req.tau_list = {cfg.tau};
  req.cfg_insertion_layer = cfg.cfg_insertion_layer;
  req.sampling.top_k = cfg.top_k;
  req.sampling.top_p = cfg.top_p;
  return req;
}

InfinityGeneration::InfinityGeneration(const InfinityModel& model, const BsqVae& vae, InfinityRequest req,
                                       InfinityRunOptions opt, KVPagePool* kv_pages)
    : model_(model),
      vae_(vae),
      req_(checked(model, req)),
      opt_(std::move(opt)),
      rows_(rows_of(req_)),
      kv_(model.backend(), model.comm(), opt_.policy, req_.schedule, model.config().depth, static_cast<int>(rows_),
          model.local_heads(), model.config().head_dim(), res_, kv_pages) {
  const InfinityConfig& cfg = model.config();
  Backend& be = model.backend();
  for (int item : req_.cfg_insertion_layer) {
    if (item == 0)
      cfg_on_logits_ = true;
    else
      cfg_layers_.push_back(cfg.depth + item);
  }
  t_start_ = now_seconds();
  cond_ = model.prepare_cond(req_.text, rows_ == 2 * images());
  if (GenerationObserver* obs = opt_.observer) {
    obs->on_tensor("cond.text_norm", be.download(cond_.text_norm));
    obs->on_tensor("cond.sos", be.download(cond_.cond_BD));
    obs->on_tensor("cond.ca_kv", be.download(cond_.ca_kv));
    if (cond_.gss.defined()) obs->on_tensor("cond.gss", be.download(cond_.gss));
  }
  const Schedule& sched = req_.schedule;
  Tensor rope_host = infinity_rope_table(sched, cfg.head_dim(), cfg.rope2d_normalized_by_hw);
  rope_ = be.device() == Device::CPU ? rope_host : be.upload(rope_host, MemCategory::Weights);
  const int pf = cfg.patch_factor(), last = num_scales() - 1;
  summed_ = be.zeros({images(), vae.codebook_dim(), sched[last].h * pf, sched[last].w * pf});
  x_ = model.first_input(cond_);
}

InfinityModel::ScaleArgs InfinityGeneration::scale_args() {
  InfinityModel::ScaleArgs a;
  a.schedule = &req_.schedule;
  a.rope = &rope_;
  a.cache = &kv_.cache();
  a.policy = &kv_.policy();
  a.observer = opt_.observer;
  a.cfg_layers = cfg_layers_;
  a.cfg = req_.cfg_list[si_];
  a.select_at_last_scale = opt_.select_at_last_scale;
  return a;
}

void InfinityGeneration::step(const std::vector<InfinityGeneration*>& batch) {
  SKV_CHECK(!batch.empty(), "internal: an empty Infinity step");
  const InfinityModel& model = batch[0]->model_;
  Backend& be = model.backend();
  std::vector<InfinityModel::ScaleArgs> args;
  args.reserve(batch.size());  // items point into it
  std::vector<InfinityModel::ScaleItem> items;
  for (InfinityGeneration* g : batch) {
    SKV_CHECK(&g->model_ == &model && !g->done() && !g->finished_,
              "internal: an Infinity step over mixed or finished requests");
    g->t_scale_ = now_seconds();
    const int si = g->si_;
    const Schedule& sched = g->req_.schedule;
    g->kv_.policy().begin_scale(si);
    g->kv_.begin_scale(static_cast<int64_t>(sched[si].h) * sched[si].w, sched.offset(si));
    args.push_back(g->scale_args());
    items.push_back({g->x_, &g->cond_, si, &args.back()});
  }
  model.forward_scales(items);

  // Logits, CFG and sampling of every generation; the TP group then broadcasts all their bits once.
  std::vector<std::vector<uint8_t>> bits(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    InfinityGeneration& g = *batch[i];
    g.x_ = items[i].x;
    g.kv_.cache().end_scale();
    g.kv_.policy().end_scale(g.si_);
    bits[i] = g.sample_bits();
  }
  broadcast_parts(model.comm(), bits);
  for (size_t i = 0; i < batch.size(); ++i) batch[i]->take_bits(bits[i]);
  be.synchronize();
  const double t_end = now_seconds();
  for (InfinityGeneration* g : batch) {
    const auto& s = g->req_.schedule[g->si_];
    ScaleTiming st;
    st.scale = g->si_;
    st.tokens = static_cast<int64_t>(s.h) * s.w;
    st.seconds = t_end - g->t_scale_;
    st.kv_store_tokens = g->kv_.store_tokens();
    g->res_.timings.push_back(st);
    ++g->si_;
    if (g->opt_.progress) g->opt_.progress(st.scale, g->num_scales(), st.seconds);
    if (g->done()) g->res_.transformer_seconds = t_end - g->t_start_;
  }
}

std::vector<uint8_t> InfinityGeneration::sample_bits() {
  const InfinityConfig& cfg = model_.config();
  Backend& be = model_.backend();
  const int si = si_, B = images(), dv = cfg.d_vae(), V = cfg.V();
  const int h = req_.schedule[si].h, w = req_.schedule[si].w;
  const int64_t l = static_cast<int64_t>(h) * w;
  const double cfg_s = req_.cfg_list[si];
  const bool mix = cfg_s != 1.0 && cfg_on_logits_ && rows_ == 2 * B;
  Tensor raw = be.download(model_.logits(x_, cond_, mix ? rows_ : B));  // [rows, l, V]
  check_finite(raw, fmt::format("scale {} ({}x{}): the logits", si, h, w));  // on every backend
  if (opt_.observer) opt_.observer->on_logits_raw(si, raw);
  // logits * (1 / tau), then cfg * cond + (1 - cfg) * uncond (PyTorch: float32 with float scalars)
  const float inv_tau = static_cast<float>(1.0 / req_.tau_list[si]);
  const float ca = static_cast<float>(cfg_s), cb = static_cast<float>(1.0 - cfg_s);
  Tensor mixed = Tensor::empty({B, l, V});
  {
    const float* rp = raw.f32();
    float* mp = mixed.f32();
    const int64_t n = static_cast<int64_t>(B) * l * V;
    if (mix)
      for (int64_t i = 0; i < n; ++i) mp[i] = ca * (rp[i] * inv_tau) + cb * (rp[n + i] * inv_tau);
    else
      for (int64_t i = 0; i < n; ++i) mp[i] = rp[i] * inv_tau;
  }
  if (opt_.observer) opt_.observer->on_logits(si, mixed);

  const int64_t nbits = static_cast<int64_t>(B) * l * dv;
  if (opt_.teacher) {
    SKV_CHECK(static_cast<int>(opt_.teacher->size()) > si && static_cast<int64_t>((*opt_.teacher)[si].size()) == nbits,
              "teacher bits for scale {} must have {} entries", si, nbits);
    return (*opt_.teacher)[si];
  }
  std::vector<uint8_t> bits(static_cast<size_t>(nbits));
  const float* mp = mixed.f32();
  for (int b = 0; b < B; ++b)
    for (int64_t t = 0; t < l; ++t)
      for (int j = 0; j < dv; ++j) {
        const float* pair = mp + ((static_cast<int64_t>(b) * l + t) * V) + 2 * j;
        float work[2] = {pair[0], pair[1]};
        const float u = uniform01(req_.seed, req_.image_ids[b], static_cast<uint32_t>(si), static_cast<uint32_t>(t),
                                  static_cast<uint32_t>(j));
        bits[(static_cast<int64_t>(b) * l + t) * dv + j] = static_cast<uint8_t>(sample_logits(work, 2, req_.sampling, u));
      }
  return bits;
}

void InfinityGeneration::take_bits(const std::vector<uint8_t>& bits) {
  const InfinityConfig& cfg = model_.config();
  Backend& be = model_.backend();
  const Schedule& sched = req_.schedule;
  const int si = si_, B = images(), pf = cfg.patch_factor(), d = vae_.codebook_dim(), dv = cfg.d_vae();
  const int h = sched[si].h, w = sched[si].w;
  std::vector<int64_t> tokens(bits.begin(), bits.end());
  if (opt_.observer) opt_.observer->on_tokens(si, tokens);
  res_.tokens.push_back(std::move(tokens));

  const std::vector<uint8_t> vbits = pf == 2 ? infinity_unpatchify_bits(bits, B, h, w, d) : bits;
  Tensor codes = vae_.bits_to_codes(vbits, B, h * pf, w * pf);
  vae_.accumulate(summed_, codes);
  if (si + 1 == num_scales()) return;
  const int hn = sched[si + 1].h, wn = sched[si + 1].w;
  const int64_t ln = static_cast<int64_t>(hn) * wn;
  Tensor next = vae_.resample(summed_, hn * pf, wn * pf);  // [B, d, hn * pf, wn * pf]
  Tensor vin = be.empty({B, ln, dv});
  if (pf == 1) {
    be.transpose_last2(next.reshape({B, d, ln}), vin);
  } else {  // pixel_unshuffle(2) -> [B, 4d, hn, wn] -> [B, hn * wn, 4d]
    Tensor nh = be.download(next);
    Tensor vh = Tensor::empty({B, ln, dv});
    const int W2 = 2 * wn;
    for (int b = 0; b < B; ++b)
      for (int c = 0; c < d; ++c)
        for (int y = 0; y < hn; ++y)
          for (int xx = 0; xx < wn; ++xx)
            for (int i = 0; i < 2; ++i)
              for (int j = 0; j < 2; ++j)
                vh.f32()[((static_cast<int64_t>(b) * ln) + y * wn + xx) * dv + c * 4 + i * 2 + j] =
                    nh.f32()[((static_cast<int64_t>(b) * d + c) * 2 * hn + 2 * y + i) * W2 + 2 * xx + j];
    if (be.device() == Device::CPU) vin = vh;
    else vin = be.upload(vh, MemCategory::Activations);
  }
  if (opt_.observer) opt_.observer->on_vae_input(si + 1, be.download(vin));
  x_ = model_.embed_input(vin, rows_);
}

Tensor InfinityGeneration::preview() const {
  Backend& be = model_.backend();
  Tensor img = vae_.decode(summed_);
  if (img.device() != Device::CPU) img = be.download(img);
  float* p = img.f32();
  for (int64_t i = 0, n = img.numel(); i < n; ++i) p[i] = (p[i] + 1.0f) / 2.0f;
  return img;
}

GenerateResult InfinityGeneration::finish() {
  SKV_CHECK(done() && !finished_, "internal: finish() of an Infinity generation at scale {} of {}{}", si_,
            num_scales(), finished_ ? " (finished already)" : "");
  finished_ = true;
  kv_.finish(res_);
  Backend& be = model_.backend();
  if (opt_.observer) opt_.observer->on_tensor("summed_codes", be.download(summed_));
  if (opt_.decode) {
    const double t0 = now_seconds();
    const int64_t B = images(), e = opt_.decode_end < 0 ? B : opt_.decode_end;
    SKV_CHECK(0 <= opt_.decode_begin && opt_.decode_begin <= e && e <= B, "decode images [{}, {}) of a batch of {}",
              opt_.decode_begin, e, B);
    Tensor img = vae_.decode(opt_.decode_begin == 0 && e == B ? summed_ : summed_.slice0(opt_.decode_begin, e));
    check_finite(img, "the decoded images");
    float* p = img.f32();
    for (int64_t i = 0, n = img.numel(); i < n; ++i) p[i] = (p[i] + 1.0f) / 2.0f;
    res_.images = img;
    res_.decode_seconds = now_seconds() - t0;
  }
  return std::move(res_);
}

int64_t infinity_rows(const InfinityRequest& req, int64_t images) {
  const std::vector<double> cfgs = per_scale(req.cfg_list, req.schedule.num_scales(), "cfg");
  const bool with_uncond = std::any_of(cfgs.begin(), cfgs.end(), [](double c) { return c != 1.0; });
  return images * (with_uncond ? 2 : 1);
}

GenerateResult infinity_generate(const InfinityModel& model, const BsqVae& vae, const InfinityRequest& req,
                                 const InfinityRunOptions& opt) {
  InfinityGeneration g(model, vae, req, opt);
  while (!g.done()) InfinityGeneration::step({&g});
  return g.finish();
}

}  // namespace skv
