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

}  // namespace

namespace {

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

GenerateResult infinity_generate(const InfinityModel& model, const BsqVae& vae, const InfinityRequest& req,
                                 const InfinityRunOptions& opt) {
  const InfinityConfig& cfg = model.config();
  Backend& be = model.backend();
  const int B = static_cast<int>(req.text.lens.size());
  SKV_CHECK(B > 0, "no prompts to generate");
  std::vector<uint32_t> ids = req.image_ids;
  if (ids.empty())
    for (int b = 0; b < B; ++b) ids.push_back(static_cast<uint32_t>(b));
  SKV_CHECK(static_cast<int>(ids.size()) == B, "image_ids: {} for {} prompts", ids.size(), B);

  const Schedule& sched = req.schedule;
  const int S = sched.num_scales();
  SKV_CHECK(S >= 1 && S <= 15, "a schedule of {} scales; Infinity has level embeddings for 1 to 15", S);
  for (int si = 0; si < S; ++si) SKV_CHECK(sched[si].t == 1, "scale {} has t = {}; images need t = 1", si, sched[si].t);
  SKV_CHECK(sched[0].h == 1 && sched[0].w == 1, "the first scale must be 1x1 (the text token), got {}x{}", sched[0].h,
            sched[0].w);
  const std::vector<double> cfgs = per_scale(req.cfg_list, S, "cfg");
  const std::vector<double> taus = per_scale(req.tau_list, S, "tau");
  for (double t : taus) SKV_CHECK(t > 0, "tau {} must be positive", t);
  bool cfg_on_logits = false;
  std::vector<int> cfg_layers;
  for (int item : req.cfg_insertion_layer) {
    if (item == 0) {
      cfg_on_logits = true;
    } else if (item < 0) {
      SKV_CHECK(cfg.depth + item > 0, "cfg_insertion_layer {} is not valid for depth {}", item, cfg.depth);
      cfg_layers.push_back(cfg.depth + item);
    } else {
      SKV_FAIL("cfg_insertion_layer {} is not supported (0: CFG on logits; -k: on the output of block depth - k)", item);
    }
  }
  const bool with_uncond = std::any_of(cfgs.begin(), cfgs.end(), [](double c) { return c != 1.0; });
  const int64_t R = with_uncond ? 2 * B : B;

  GenerateResult res;
  RequestKV kv(be, model.comm(), opt.policy, sched, cfg.depth, static_cast<int>(R), model.local_heads(),
               cfg.head_dim(), res);
  KVPolicy* policy = &kv.policy();
  MultiScaleKVCache& cache = kv.cache();
  const double t_start = now_seconds();

  const InfinityModel::Cond cond = model.prepare_cond(req.text, with_uncond);
  if (opt.observer) {
    opt.observer->on_tensor("cond.text_norm", be.download(cond.text_norm));
    opt.observer->on_tensor("cond.sos", be.download(cond.cond_BD));
    opt.observer->on_tensor("cond.ca_kv", be.download(cond.ca_kv));
    if (cond.gss.defined()) opt.observer->on_tensor("cond.gss", be.download(cond.gss));
  }
  Tensor rope_host = infinity_rope_table(sched, cfg.head_dim(), cfg.rope2d_normalized_by_hw);
  const Tensor rope = be.device() == Device::CPU ? rope_host : be.upload(rope_host, MemCategory::Weights);

  const int pf = cfg.patch_factor(), d = vae.codebook_dim(), dv = cfg.d_vae(), V = cfg.V();
  const int VH = sched[S - 1].h * pf, VW = sched[S - 1].w * pf;
  Tensor summed = be.zeros({B, d, VH, VW});
  Tensor x = model.first_input(cond);

  InfinityModel::ScaleArgs args;
  args.schedule = &sched;
  args.rope = &rope;
  args.cache = &cache;
  args.policy = policy;
  args.observer = opt.observer;
  args.cfg_layers = cfg_layers;
  args.select_at_last_scale = opt.select_at_last_scale;

  for (int si = 0; si < S; ++si) {
    const double t0 = now_seconds();
    const int h = sched[si].h, w = sched[si].w;
    const int64_t l = static_cast<int64_t>(h) * w;
    args.cfg = cfgs[si];
    policy->begin_scale(si);
    cache.begin_scale(l, sched.offset(si));
    model.forward_scale(x, cond, si, args);
    cache.end_scale();
    policy->end_scale(si);

    const bool mix = cfgs[si] != 1.0 && cfg_on_logits && R == 2 * B;
    Tensor raw = be.download(model.logits(x, cond, mix ? R : B));  // [rows, l, V]
    check_finite(raw, fmt::format("scale {} ({}x{}): the logits", si, h, w));  // on every backend
    if (opt.observer) opt.observer->on_logits_raw(si, raw);
    // logits * (1 / tau), then cfg * cond + (1 - cfg) * uncond (PyTorch: float32 with float scalars)
    const float inv_tau = static_cast<float>(1.0 / taus[si]);
    const float ca = static_cast<float>(cfgs[si]), cb = static_cast<float>(1.0 - cfgs[si]);
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
    if (opt.observer) opt.observer->on_logits(si, mixed);

    const int64_t nbits = static_cast<int64_t>(B) * l * dv;
    std::vector<uint8_t> bits(static_cast<size_t>(nbits));
    if (opt.teacher) {
      SKV_CHECK(static_cast<int>(opt.teacher->size()) > si && static_cast<int64_t>((*opt.teacher)[si].size()) == nbits,
                "teacher bits for scale {} must have {} entries", si, nbits);
      bits = (*opt.teacher)[si];
    } else {
      const float* mp = mixed.f32();
      for (int b = 0; b < B; ++b)
        for (int64_t t = 0; t < l; ++t)
          for (int j = 0; j < dv; ++j) {
            const float* pair = mp + ((static_cast<int64_t>(b) * l + t) * V) + 2 * j;
            float work[2] = {pair[0], pair[1]};
            const float u = uniform01(req.seed, ids[b], static_cast<uint32_t>(si), static_cast<uint32_t>(t),
                                      static_cast<uint32_t>(j));
            bits[(static_cast<int64_t>(b) * l + t) * dv + j] = static_cast<uint8_t>(sample_logits(work, 2, req.sampling, u));
          }
    }
    // As VAR: rank 0's bits are broadcast, so replicated arithmetic can never split the TP group.
    if (model.comm().size() > 1) model.comm().broadcast_host(bits.data(), bits.size(), 0);
    std::vector<int64_t> tokens(bits.begin(), bits.end());
    if (opt.observer) opt.observer->on_tokens(si, tokens);
    res.tokens.push_back(std::move(tokens));

    const std::vector<uint8_t> vbits = pf == 2 ? infinity_unpatchify_bits(bits, B, h, w, d) : bits;
    Tensor codes = vae.bits_to_codes(vbits, B, h * pf, w * pf);
    vae.accumulate(summed, codes);
    if (si + 1 < S) {
      const int hn = sched[si + 1].h, wn = sched[si + 1].w;
      const int64_t ln = static_cast<int64_t>(hn) * wn;
      Tensor next = vae.resample(summed, hn * pf, wn * pf);  // [B, d, hn * pf, wn * pf]
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
      if (opt.observer) opt.observer->on_vae_input(si + 1, be.download(vin));
      x = model.embed_input(vin, R);
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
  if (opt.observer) opt.observer->on_tensor("summed_codes", be.download(summed));
  if (opt.decode) {
    const double t0 = now_seconds();
    Tensor img = vae.decode(summed);
    check_finite(img, "the decoded images");
    float* p = img.f32();
    for (int64_t i = 0, n = img.numel(); i < n; ++i) p[i] = (p[i] + 1.0f) / 2.0f;
    res.images = img;
    res.decode_seconds = now_seconds() - t0;
  }
  return res;
}

}  // namespace skv
