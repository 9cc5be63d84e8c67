// golden_infinity.cpp - the Infinity golden check (../shared/golden/README-infinity.md).
// Teacher-forced: the recorded bits of each scale feed the next, so a near-tie cannot derail the rest.
// Compared: the text path (cond.*), x_in, block outputs, raw and CFG logits (within --tol), bits as an
// agreement fraction (exact where the recorded logit margin exceeds 1e-4 and sampling was greedy),
// the VAE-space inputs codes_in, the summed codes, the image (within one 8-bit level) and the
// teacher-forced training-graph tensors tf.*. Everything - depth, chunk layout, schedule, batch, text
// lengths, sampling - comes from the golden's own files.
// With NAME.scalekv.json: the compressed run is replayed with the recorded kept indices
// (TeacherKeptPolicy) and its logits/bits/codes/image compared; when this build has the ScaleKV
// policy, it also selects at every recorded compression and its window, scores, pooled scores and
// kept sets are compared with the records (make_golden_scalekv_policy below is the one place to wire).
#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "kvcache/budget_table.h"
#include "kvcache/scalekv.h"
#include "kvcache/teacher_kept_policy.h"
#include "launcher/golden.h"
#include "parallel/communicator.h"
#include "runtime/check.h"
#include "runtime/json_util.h"
#include "engine/engine.h"
#include "engine/infinity_family.h"
#include "runtime/models/infinity_generate.h"
#include "runtime/models/model_bundle.h"

namespace skv {

namespace {

class Recorder final : public GenerationObserver {
 public:
  explicit Recorder(int block_scales) : block_scales_(block_scales) {}
  std::map<int, Tensor> x_in, logits, logits_raw, vae_in;
  std::map<std::pair<int, int>, Tensor> block_out;
  std::map<std::string, Tensor> named;
  void on_input(int si, const Tensor& x) override { x_in[si] = x.clone(); }
  void on_block_output(int si, int l, const Tensor& x) override {
    if (si < block_scales_) block_out[{si, l}] = x.clone();
  }
  void on_logits_raw(int si, const Tensor& l) override { logits_raw[si] = l.clone(); }
  void on_logits(int si, const Tensor& l) override { logits[si] = l.clone(); }
  void on_vae_input(int si, const Tensor& x) override { vae_in[si] = x.clone(); }
  void on_tensor(const std::string& name, const Tensor& t) override { named[name] = t.clone(); }
  bool wants_block_outputs() const override { return block_scales_ > 0; }

 private:
  int block_scales_;
};

// What the golden's config says to run.
struct GoldenRun {
  InfinityRequest req;
  int B = 0;
};

std::vector<int64_t> i64_values(const Tensor& t) {
  std::vector<int64_t> v(static_cast<size_t>(t.numel()));
  if (t.dtype() == DType::I64) {
    std::copy(t.data<int64_t>(), t.data<int64_t>() + t.numel(), v.begin());
  } else {
    SKV_CHECK(t.dtype() == DType::I32, "expected an integer tensor, got {}", t.describe());
    std::copy(t.data<int32_t>(), t.data<int32_t>() + t.numel(), v.begin());
  }
  return v;
}

GoldenRun read_run(const nlohmann::json& j, const InfinityConfig& cfg, const SafeTensors& exp, const std::string& where) {
  GoldenRun g;
  JsonFields top(j, where);
  // schedule
  std::vector<ScaleShape> scales;
  if (top.has("scale_schedule")) {
    for (const auto& s : j.at("scale_schedule")) {
      SKV_CHECK(s.is_array() && s.size() == 3 && s[0].is_number_integer() && s[1].is_number_integer() &&
                    s[2].is_number_integer(), "{}: scale_schedule entries must be [t, h, w]", where);
      for (int k = 0; k < 3; ++k)
        SKV_CHECK(s[k].get<int64_t>() >= 1 && s[k].get<int64_t>() <= 4096, "{}: scale_schedule entry {} is outside "
                  "[1, 4096]", where, s.dump());
      scales.push_back({s[0].get<int>(), s[1].get<int>(), s[2].get<int>()});
    }
    SKV_CHECK(!scales.empty() && scales.size() <= 256, "{}: scale_schedule must list 1 to 256 scales", where);
  } else {
    const JsonFields c = top.object("config");
    scales = infinity_schedule(c.number("h_div_w"), c.string("pn")).scales();
  }
  g.req.schedule = Schedule(scales);
  // text: prefer the tensors, fall back to the JSON copy
  if (exp.contains("text.kv_compact") && exp.contains("text.cu_seqlens_k")) {
    g.req.text.kv_compact = exp.load("text.kv_compact", MemCategory::Workspace);
    const auto cu = i64_values(exp.load_raw("text.cu_seqlens_k"));
    SKV_CHECK(cu.size() >= 2 && cu[0] == 0, "{}: tensor 'text.cu_seqlens_k' must start at 0", exp.path());
    for (size_t i = 1; i < cu.size(); ++i) {
      SKV_CHECK(cu[i] > cu[i - 1], "{}: tensor 'text.cu_seqlens_k' must increase (prompt {} has {} tokens): corrupted "
                "golden?", exp.path(), i - 1, cu[i] - cu[i - 1]);
      g.req.text.lens.push_back(cu[i] - cu[i - 1]);
    }
    SKV_CHECK(cu.back() == g.req.text.kv_compact.dim(0), "{}: tensor 'text.cu_seqlens_k' ends at {} but "
              "'text.kv_compact' has {} rows: corrupted golden?", exp.path(), cu.back(), g.req.text.kv_compact.dim(0));
  } else {
    const JsonFields t = top.object("text");
    g.req.text.lens = t.integers("lens");
    const auto& rows = j.at("text").at("kv_compact");
    const int64_t N = static_cast<int64_t>(rows.size()), Ct5 = N ? static_cast<int64_t>(rows[0].size()) : 0;
    g.req.text.kv_compact = Tensor::empty({N, Ct5}, DType::F32, MemCategory::Workspace);
    for (int64_t r = 0; r < N; ++r)
      for (int64_t c = 0; c < Ct5; ++c) g.req.text.kv_compact.f32()[r * Ct5 + c] = rows[r][c].get<float>();
  }
  g.B = static_cast<int>(g.req.text.lens.size());
  SKV_CHECK(g.B >= 1 && g.B <= 4096, "{}: the golden's text has {} prompts, expected 1 to 4096", where, g.B);
  // sampling
  const JsonFields s = top.object("sampling");
  for (double v : s.numbers("cfg_list")) g.req.cfg_list.push_back(v);
  for (double v : s.numbers("tau_list")) g.req.tau_list.push_back(v);
  g.req.cfg_insertion_layer.clear();
  for (int64_t v : s.integers("cfg_insertion_layer")) g.req.cfg_insertion_layer.push_back(static_cast<int>(v));
  g.req.sampling.top_k = s.int_in("top_k", 0, 0, 1 << 24);
  g.req.sampling.top_p = static_cast<float>(s.number("top_p", 0.0));
  g.req.seed = static_cast<uint64_t>(s.integer("g_seed", 0));
  if (s.has("B")) SKV_CHECK(s.integer("B") == g.B, "{}: sampling.B = {} but the text has {} prompts", where, s.integer("B"), g.B);
  (void)cfg;
  return g;
}

// Recorded bits of every scale in transformer layout [B*l*d_vae] (8B goldens may store the VAE layout).
std::vector<std::vector<uint8_t>> read_bits(const SafeTensors& exp, const InfinityConfig& cfg, const Schedule& sched, int B) {
  std::vector<std::vector<uint8_t>> out;
  const int dv = cfg.d_vae(), d = cfg.vae.codebook_dim;
  for (int si = 0; si < sched.num_scales(); ++si) {
    const std::string n = fmt::format("bits.{}", si);
    const Tensor t = exp.load_raw(n, MemCategory::Workspace);
    const int h = sched[si].h, w = sched[si].w;
    const int64_t want = static_cast<int64_t>(B) * h * w * dv;
    SKV_CHECK(t.numel() == want, "{}: {} has {} values, the schedule needs {} ({} x {}x{} x {})", exp.path(), n, t.numel(),
              want, B, h, w, dv);
    std::vector<uint8_t> bits(static_cast<size_t>(want));
    const auto v = i64_values(t);
    for (int64_t i = 0; i < want; ++i) {
      SKV_CHECK(v[i] == 0 || v[i] == 1, "{}: {} holds {}, bits must be 0 or 1", exp.path(), n, v[i]);
      bits[i] = static_cast<uint8_t>(v[i]);
    }
    if (cfg.spatial_patchify && t.dim(-1) == d && dv != d) bits = infinity_patchify_bits(bits, B, h, w, d);
    out.push_back(std::move(bits));
  }
  return out;
}

// -inf == -inf counts as equal; returns host float copies ready for GoldenReport::compare.
void mask_infinities(std::vector<float>& a, std::vector<float>& b) {
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    if (std::isinf(a[i]) && std::isinf(b[i]) && (a[i] > 0) == (b[i] > 0)) a[i] = b[i] = 0.0f;
}

// Compares every recorded tensor of a teacher-forced run. `prefix` labels the lines ("" or "scalekv ").
void compare_run(GoldenReport& rep, const std::string& prefix, const SafeTensors& exp, const Recorder& rec,
                 const GenerateResult& res, const InfinityConfig& cfg, const GoldenRun& g,
                 const std::vector<std::vector<uint8_t>>& bits, const GoldenOptions& opt) {
  const Schedule& sched = g.req.schedule;
  const int S = sched.num_scales(), B = g.B, V = cfg.V();
  auto cmp = [&](const std::string& name, const Tensor& got) {
    if (!exp.contains(name)) return;
    Tensor want = exp.load(name, MemCategory::Workspace);
    if (!got.defined() || want.numel() != got.numel()) {
      rep.fail(prefix + name, fmt::format("recorded {} values, this run made {}", want.numel(),
                                          got.defined() ? got.numel() : 0));
      return;
    }
    rep.compare(prefix + name, got.f32(), want.f32(), want.numel(), opt.tol);
  };
  auto named = [&](const std::string& n) { return rec.named.count(n) ? rec.named.at(n) : Tensor(); };
  for (const char* n : {"cond.text_norm", "cond.sos", "cond.ca_kv", "cond.gss"}) cmp(n, named(n));
  int64_t agree = 0, total = 0, strict_agree = 0, strict_total = 0;
  for (int si = 0; si < S; ++si) {
    if (rec.x_in.count(si)) cmp(fmt::format("x_in.{}", si), rec.x_in.at(si));
    for (int l = 0; l < cfg.depth; ++l) {
      const std::string n = fmt::format("block_out.{}.{}", si, l);
      if (exp.contains(n)) cmp(n, rec.block_out.count({si, l}) ? rec.block_out.at({si, l}) : Tensor());
    }
    if (rec.logits_raw.count(si)) cmp(fmt::format("logits_raw.{}", si), rec.logits_raw.at(si));
    if (si >= 1 && rec.vae_in.count(si)) cmp(fmt::format("codes_in.{}", si), rec.vae_in.at(si));
    const std::string ln = fmt::format("logits.{}", si);
    if (!exp.contains(ln) || !rec.logits.count(si)) continue;
    const Tensor& got = rec.logits.at(si);
    cmp(ln, got);
    // bits: argmax of each pair of this run's logits vs the recording, strict where the recorded
    // margin is large
    Tensor want = exp.load(ln, MemCategory::Workspace);
    if (want.numel() != got.numel()) continue;
    const int64_t pairs = want.numel() / 2;
    SKV_CHECK(static_cast<int64_t>(bits[si].size()) == pairs, "{}: bits.{} has {} values for {} logit pairs", exp.path(),
              si, bits[si].size(), pairs);
    for (int64_t p = 0; p < pairs; ++p) {
      const float* gp = got.f32() + 2 * p;
      const float* wp = want.f32() + 2 * p;
      const bool same = static_cast<uint8_t>(gp[1] > gp[0]) == bits[si][p];
      agree += same;
      ++total;
      if (std::fabs(wp[1] - wp[0]) > opt.margin) {
        strict_agree += same;
        ++strict_total;
      }
    }
  }
  const bool greedy = g.req.sampling.top_k == 1;
  rep.fraction(prefix + "bits (teacher-forced argmax)", agree, total, 0.0, greedy ? "all bits" : "sampled run, informational");
  if (greedy) rep.fraction(prefix + "bits where margin > 1e-4", strict_agree, strict_total, 1.0);
  cmp("summed_codes", named("summed_codes"));
  if (exp.contains("image_u8")) {
    const Tensor want = exp.load_raw("image_u8", MemCategory::Workspace);  // [B, H, W, 3] BGR
    if (!res.images.defined() || want.numel() != res.images.numel()) {
      rep.fail(prefix + "image_u8", fmt::format("recorded {} values, decoded {}", want.numel(),
                                                res.images.defined() ? res.images.numel() : 0));
    } else {
      const auto rgb = infinity_images_to_rgb8(res.images);
      const int64_t HW = res.images.dim(2) * res.images.dim(3);
      std::vector<float> a, b;
      for (int bi = 0; bi < B; ++bi)
        for (int64_t i = 0; i < HW; ++i)
          for (int c = 0; c < 3; ++c) {
            a.push_back(rgb[bi][i * 3 + (2 - c)]);
            b.push_back(want.data<uint8_t>()[(bi * HW + i) * 3 + c]);
          }
      rep.compare(prefix + "image_u8 (levels)", a.data(), b.data(), static_cast<int64_t>(a.size()), 1.0);
      int64_t differ = 0;
      for (size_t i = 0; i < a.size(); ++i) differ += a[i] != b[i];
      rep.info(prefix + "image_u8 values differing", fmt::format("{} of {}", differ, a.size()));
    }
  }
  // The training graph (tf.*): cond rows of the first K scales, K from the recording's length.
  if (exp.contains("tf.logits")) {
    const Tensor want = exp.load("tf.logits", MemCategory::Workspace);  // [B, L, V]
    const int64_t L = want.dim(1);
    int K = 0;
    while (K < S && sched.offset(K + 1) <= L) ++K;
    if (sched.offset(K) != L || want.dim(0) != B) {
      rep.fail(prefix + "tf.logits", fmt::format("{} tokens do not end a scale of the schedule", L));
    } else {
      std::vector<float> got;
      for (int b = 0; b < B; ++b)
        for (int si = 0; si < K; ++si) {
          const Tensor& v = rec.logits_raw.at(si);  // [rows, l, V], cond rows first
          const int64_t per = sched.tokens(si) * V;
          got.insert(got.end(), v.f32() + b * per, v.f32() + (b + 1) * per);
        }
      rep.compare(prefix + "tf.logits (cond rows)", got.data(), want.f32(), want.numel(), opt.tol);
      if (exp.contains("tf.input")) {
        const Tensor wi = exp.load("tf.input", MemCategory::Workspace);  // [B, L - 1, d_vae]
        std::vector<float> gi;
        for (int b = 0; b < B; ++b)
          for (int si = 1; si < K; ++si) {
            const Tensor& v = rec.vae_in.at(si);
            const int64_t per = v.numel() / B;
            gi.insert(gi.end(), v.f32() + b * per, v.f32() + (b + 1) * per);
          }
        if (static_cast<int64_t>(gi.size()) == wi.numel())
          rep.compare(prefix + "tf.input", gi.data(), wi.f32(), wi.numel(), opt.tol);
        else
          rep.fail(prefix + "tf.input", fmt::format("recorded {} values, this run made {}", wi.numel(), gi.size()));
      }
    }
  }
}

// The ScaleKV policy with the golden's recorded settings (reference scoring). Returns null, with the
// reason, when this build has no ScaleKV policy. To wire it: build the policy from `skv_json`
// ("scalekv": budget table, enable_scale_kv_args {window_size, max_capacity, kernel_size, pooling},
// tie rule) for `info`, with --scalekv-scoring=reference, and return it.
std::unique_ptr<KVPolicy> make_golden_scalekv_policy(const nlohmann::json& skv_json, int depth, int num_heads,
                                                     const Schedule& schedule, std::string* why,
                                                     const std::string& where = "NAME.scalekv.json") {
  (void)num_heads;
  (void)why;
  // The recorded settings: the budget table (official format), window, pooling kernel; reference scoring
  // (raw q of mat_qkv, grid-centre window, max-pool, lower-index ties) as the released code does.
  ScaleKVOptions o;
  o.calibration = ScaleKVCalibration::Table;
  o.scoring = ScaleKVScoring::Reference;
  o.table = std::make_shared<BudgetTable>(parse_budget_table(skv_json.dump(), where, depth, schedule));
  o.budget = o.table->base_capacity;
  o.window = o.table->window;
  if (skv_json.contains("scalekv") && skv_json["scalekv"].contains("enable_scale_kv_args")) {
    const auto& args = skv_json["scalekv"]["enable_scale_kv_args"];
    const JsonFields a(args, where + ": scalekv.enable_scale_kv_args");
    o.kernel = a.int_in("kernel_size", 5, 1, 255);
    a.require(a.string("pooling", "maxpool") == "maxpool", "pooling", "is not the released code's maxpool");
  }
  o.select_at_last_scale = true;  // the released code selects after the last scale too; its records are compared
  return std::make_unique<ScaleKVPolicy>(o, depth, schedule);
}

// Compares what the inner policy computed at every recorded compression with the records.
void compare_selections(GoldenReport& rep, const SafeTensors& exp, const TeacherKeptPolicy& tk, int heads,
                        const GoldenOptions& opt) {
  int64_t kept_agree = 0, kept_total = 0, strict_rows_ok = 0, strict_rows = 0;
  double worst_scores = 0, worst_pooled = 0;
  bool window_ok = true, have_scores = true, have_pooled = true, sizes_ok = true;
  for (const auto& s : tk.selections()) {
    const std::string p = fmt::format("kv.{}.{}.", s.scale, s.layer);
    if (!exp.contains(p + "kept")) continue;
    const Tensor wk = exp.load_raw(p + "kept", MemCategory::Workspace);  // [R, H, n]
    const auto kept_rec = i64_values(wk);
    const int64_t n = wk.dim(2), T = s.total;
    const Tensor wpool = exp.load(p + "pooled", MemCategory::Workspace);  // [R, H, T]
    const Tensor wscore = exp.load(p + "scores", MemCategory::Workspace);
    const auto win_rec = i64_values(exp.load_raw(p + "window", MemCategory::Workspace));
    const int64_t nw = static_cast<int64_t>(win_rec.size()) / (static_cast<int64_t>(s.rows) * heads);
    if (s.budget != n || static_cast<int64_t>(s.kept.size()) != static_cast<int64_t>(s.rows) * s.local_heads * n ||
        wpool.dim(2) != T) {
      sizes_ok = false;
      rep.fail(p + "kept", fmt::format("policy kept {} of {} tokens, recorded {} of {}", s.budget, T, n, wpool.dim(2)));
      continue;
    }
    for (int r = 0; r < s.rows; ++r)
      for (int hl = 0; hl < s.local_heads; ++hl) {
        const int hg = s.head_offset + hl;
        const int64_t rh_g = static_cast<int64_t>(r) * heads + hg, rh_l = static_cast<int64_t>(r) * s.local_heads + hl;
        // window
        std::set<int64_t> wr(win_rec.begin() + rh_g * nw, win_rec.begin() + (rh_g + 1) * nw);
        if (!s.record.window.empty()) {
          const int64_t mw = static_cast<int64_t>(s.record.window.size()) / (static_cast<int64_t>(s.rows) * s.local_heads);
          std::set<int64_t> wg(s.record.window.begin() + rh_l * mw, s.record.window.begin() + (rh_l + 1) * mw);
          window_ok = window_ok && wg == wr;
        }
        // scores / pooled
        auto cmp_arr = [&](const std::vector<float>& got, const Tensor& want, double& worst, bool& have) {
          if (static_cast<int64_t>(got.size()) != static_cast<int64_t>(s.rows) * s.local_heads * T) {
            have = false;
            return;
          }
          std::vector<float> a(got.begin() + rh_l * T, got.begin() + (rh_l + 1) * T);
          std::vector<float> b(want.f32() + rh_g * T, want.f32() + (rh_g + 1) * T);
          mask_infinities(a, b);
          for (int64_t i = 0; i < T; ++i) worst = std::max(worst, std::isnan(a[i] - b[i]) ? INFINITY : std::fabs(static_cast<double>(a[i]) - b[i]));
        };
        cmp_arr(s.record.scores, wscore, worst_scores, have_scores);
        cmp_arr(s.record.pooled, wpool, worst_pooled, have_pooled);
        // kept sets; exact where the recorded top-k boundary gap exceeds the margin
        std::set<int64_t> kr(kept_rec.begin() + rh_g * n, kept_rec.begin() + (rh_g + 1) * n);
        std::set<int64_t> kg(s.kept.begin() + rh_l * n, s.kept.begin() + (rh_l + 1) * n);
        int64_t common = 0;
        for (int64_t v : kg) common += kr.count(v);
        kept_agree += common;
        kept_total += n;
        std::vector<float> masked(wpool.f32() + rh_g * T, wpool.f32() + (rh_g + 1) * T);
        for (int64_t v : wr) masked[v] = -INFINITY;
        std::vector<float> sorted = masked;
        std::sort(sorted.begin(), sorted.end(), std::greater<float>());
        const int64_t k = n - static_cast<int64_t>(wr.size());
        double gap = INFINITY;
        if (k > 0 && k < T) {
          const float kth = sorted[k - 1];
          for (int64_t i = k; i < T; ++i)
            if (sorted[i] < kth) {
              gap = static_cast<double>(kth) - sorted[i];
              break;
            }
        }
        if (gap > opt.margin) {
          ++strict_rows;
          strict_rows_ok += kg == kr;
        }
      }
  }
  if (!sizes_ok) return;
  if (have_scores) rep.info("scalekv scores", fmt::format("max|err| {:.3g}", worst_scores));
  if (have_scores && worst_scores > opt.tol) rep.fail("scalekv scores", fmt::format("beyond tolerance {:.0e}", opt.tol));
  if (!have_scores) rep.info("scalekv scores", "not recorded by the policy");
  if (have_pooled) rep.info("scalekv pooled", fmt::format("max|err| {:.3g}", worst_pooled));
  if (have_pooled && worst_pooled > opt.tol) rep.fail("scalekv pooled", fmt::format("beyond tolerance {:.0e}", opt.tol));
  if (!have_pooled) rep.info("scalekv pooled", "not recorded by the policy");
  if (!window_ok) rep.fail("scalekv window", "observation windows differ from the recording");
  rep.fraction("scalekv kept (all rows)", kept_agree, kept_total, 0.0, "informational");
  rep.fraction("scalekv kept rows, gap > 1e-4", strict_rows_ok, strict_rows, 1.0);
  for (const auto& [sl, b] : tk.budget_mismatches())
    rep.fail(fmt::format("scalekv budget s{} l{}", sl.first, sl.second),
             fmt::format("policy keeps {}, the official code kept {}", b.first, b.second));
}

// The Infinity golden format (README-infinity.md). Full-cache run: every scale's bits, logits and raw
// logits, the VAE-space inputs, the summed codes, the image, the text path and the teacher-forced
// training graph are required; x_in / block_out (pruned to the first scales) and the text tensors (the
// config holds a copy) are optional.
GoldenTensorSpec infinity_golden_spec(const Schedule& sched, int depth) {
  GoldenTensorSpec s;
  const int S = sched.num_scales();
  for (int si = 0; si < S; ++si) {
    for (const char* n : {"bits", "logits", "logits_raw"}) s.required.push_back(fmt::format("{}.{}", n, si));
    if (si >= 1) s.required.push_back(fmt::format("codes_in.{}", si));
    s.optional.push_back(fmt::format("x_in.{}", si));
    for (int l = 0; l < depth; ++l) s.optional.push_back(fmt::format("block_out.{}.{}", si, l));
  }
  for (const char* n : {"summed_codes", "image_u8", "cond.text_norm", "cond.sos", "cond.ca_kv", "cond.gss", "tf.logits",
                        "tf.input"})
    s.required.push_back(n);
  s.optional.push_back("text.kv_compact");
  s.optional.push_back("text.cu_seqlens_k");
  return s;
}

// The ScaleKV run (first compressed scale k0 from the budget table): bits and VAE inputs of every
// scale; logits and the compression records (kept, window, scores, pooled) of every layer from k0 on.
GoldenTensorSpec infinity_scalekv_golden_spec(const Schedule& sched, int depth, int k0) {
  GoldenTensorSpec s;
  const int S = sched.num_scales();
  for (int si = 0; si < S; ++si) {
    s.required.push_back(fmt::format("bits.{}", si));
    if (si >= 1) s.required.push_back(fmt::format("codes_in.{}", si));
    if (si < k0) continue;
    s.required.push_back(fmt::format("logits.{}", si));
    s.required.push_back(fmt::format("logits_raw.{}", si));
    s.optional.push_back(fmt::format("x_in.{}", si));
    for (int l = 0; l < depth; ++l)
      for (const char* r : {"kept", "window", "scores", "pooled"}) s.required.push_back(fmt::format("kv.{}.{}.{}", si, l, r));
  }
  for (const char* n : {"summed_codes", "image_u8", "cond.text_norm", "cond.sos", "cond.ca_kv", "cond.gss"})
    s.required.push_back(n);
  return s;
}

// Recorded kept indices of one compression: [rows, heads, n], each in [0, tokens so far), distinct per
// (row, head) - checked before the replay so a corrupted record is named with its file and tensor.
std::vector<int32_t> golden_kept(const SafeTensors& exp, const std::string& k, const Tensor& t, int64_t total) {
  const auto v = golden_indices(exp, k, t.numel(), 0, total, fmt::format("kept token positions, {} tokens so far", total));
  const int64_t n = t.dim(2);
  for (int64_t rh = 0; rh < t.dim(0) * t.dim(1); ++rh) {
    std::set<int64_t> seen(v.begin() + rh * n, v.begin() + (rh + 1) * n);
    SKV_CHECK(static_cast<int64_t>(seen.size()) == n, "{}: tensor '{}' keeps a token twice in row/head {}: corrupted "
              "golden?", exp.path(), k, rh);
  }
  return std::vector<int32_t>(v.begin(), v.end());
}

}  // namespace

GoldenOutcome verify_infinity_golden(const std::string& dir, const std::string& name, const GoldenOptions& opt) {
  const std::string base = dir + "/" + name;
  // A golden whose config is there but whose weights or records are not is broken, not skipped.
  for (const char* suffix : {".model.safetensors", ".vae.safetensors", ".expected.safetensors"})
    if (!std::filesystem::exists(base + suffix)) {
      fmt::print("FAIL {}: {}{} is missing\n", name, base, suffix);
      return {GoldenStatus::Fail, fmt::format("{}{} is missing", base, suffix)};
    }
  const std::string cfg_path = base + ".config.json";
  const InfinityConfig cfg = InfinityConfig::load(cfg_path);
  const nlohmann::json j = read_json_file(cfg_path);
  std::unique_ptr<Communicator> local;
  Communicator* comm = opt.comm;
  if (!comm) {
    local = make_local_communicator();
    comm = local.get();
  }
  const bool print = comm->rank() == 0;
  Backend& be = backend_for(opt.device);
  const auto loaded =
      load_infinity(cfg, WeightSource::files(base + ".model.safetensors", base + ".vae.safetensors"), be, *comm);
  const InfinityModel& model = *loaded->model;
  BsqVae& vae = *loaded->vae;
  SafeTensors exp(base + ".expected.safetensors");
  // The official image was decoded on CPU by PyTorch 1.13 with a channels-last decoder input, whose
  // GroupNorm statistics are float32 sums split over torch's threads: reproduce that kernel with the
  // golden's thread count (runtime/models/torch_group_norm.h); the exact GroupNorm differs from it by
  // up to 2 levels of image_u8 on 1M-pixel images.
  if (j.contains("torch_num_threads") && j["torch_num_threads"].is_number_integer() &&
      j["torch_num_threads"].get<int>() > 0)
    vae.set_torch_group_norm_threads(j["torch_num_threads"].get<int>());
  const GoldenRun g = read_run(j, cfg, exp, cfg_path);
  const Schedule& sched = g.req.schedule;
  const int S = sched.num_scales();

  if (print)
    fmt::print("golden {} (infinity: depth {} in {} chunks, width {}, heads {}, text {}, {} scales, {} tokens, B={}, "
               "text lengths {}) on {}, tp {}\n", name, cfg.depth, cfg.block_chunks, cfg.embed_dim, cfg.num_heads,
               cfg.text_channels, S, sched.total(), g.B, fmt::join(g.req.text.lens, ","), be.name(), comm->size());
  if (print && vae.torch_group_norm_threads() > 0)
    fmt::print("decoder GroupNorm: PyTorch 1.13 channels-last CPU kernel as with {} torch thread(s) (config "
               "torch_num_threads)\n", vae.torch_group_norm_threads());
  GoldenReport rep(print);
  check_golden_tensors(rep, exp, infinity_golden_spec(sched, cfg.depth));
  for (int si = 0; si < S; ++si)
    if (!exp.contains(fmt::format("bits.{}", si))) {
      if (print) fmt::print("FAIL {}: the teacher-forced run needs every bits.N\n", name);
      return {GoldenStatus::Fail, "required tensors missing"};
    }
  const auto bits = read_bits(exp, cfg, sched, g.B);
  int block_scales = 0;
  while (block_scales < S && exp.contains(fmt::format("block_out.{}.0", block_scales))) ++block_scales;
  // Every run goes through the engine (one request each), the path generate takes: a family whose
  // defaults are the golden's request, one request naming its prompts.
  InfinityRequest defaults = g.req;
  defaults.text = {};
  InfinityFamily family(model, vae, defaults, g.req.text);
  int64_t next_id = 0;
  auto run = [&](const InfinityRunOptions& hooks) {
    EngineRequest r;
    r.id = next_id++;
    for (int i = 0; i < g.B; ++i) r.prompts.push_back(i);
    r.image_ids = g.req.image_ids;
    r.seed = g.req.seed;
    family.attach(r.id, hooks);
    return Engine::run_one(family, be, *comm, *comm, r).gen;
  };
  {
    Recorder rec(block_scales);
    InfinityRunOptions o;
    o.teacher = &bits;
    o.observer = &rec;
    const GenerateResult res = run(o);
    compare_run(rep, "", exp, rec, res, cfg, g, bits, opt);
    rep.info("time", fmt::format("transformer {:.2f} s, decoder {:.2f} s", res.transformer_seconds, res.decode_seconds));
  }
  {  // free-running with the golden's sampling settings (informational: margins can be ~1e-5)
    const GenerateResult fr = run(InfinityRunOptions{});
    int64_t fa = 0, ft = 0;
    for (int si = 0; si < S; ++si)
      for (size_t t = 0; t < bits[si].size(); ++t) {
        fa += fr.tokens[si][t] == bits[si][t];
        ++ft;
      }
    rep.fraction("free-running bits", fa, ft, 0.0, "informational");
  }

  // The ScaleKV half.
  std::string skv_note;
  if (std::filesystem::exists(base + ".scalekv.json")) {
    const std::string sexp_path = base + ".scalekv.expected.safetensors";
    if (!std::filesystem::exists(sexp_path)) {
      rep.fail("scalekv", fmt::format("{}.scalekv.json is there but {} is missing", base, sexp_path));
    } else {
      const nlohmann::json sj = read_json_file(base + ".scalekv.json");
      SafeTensors sexp(sexp_path);
      std::string why;
      auto inner = make_golden_scalekv_policy(sj, cfg.depth, cfg.num_heads, sched, &why, base + ".scalekv.json");
      const int k0 = first_compressed_scale(sched, parse_budget_table(sj.dump(), base + ".scalekv.json", cfg.depth,
                                                                      sched).base_capacity);
      check_golden_tensors(rep, sexp, infinity_scalekv_golden_spec(sched, cfg.depth, k0), "scalekv ");
      for (int si = 0; si < S; ++si)
        SKV_CHECK(sexp.contains(fmt::format("bits.{}", si)), "{}: required tensor 'bits.{}' is missing", sexp_path, si);
      const auto sbits = read_bits(sexp, cfg, sched, g.B);
      TeacherKeptPolicy tk(inner.get(), cfg.num_heads);
      int compressions = 0;
      for (int si = 0; si < S; ++si)
        for (int l = 0; l < cfg.depth; ++l) {
          const std::string k = fmt::format("kv.{}.{}.kept", si, l);
          if (!sexp.contains(k)) continue;
          const Tensor t = sexp.load_raw(k, MemCategory::Workspace);  // [R, H, n]
          SKV_CHECK(t.ndim() == 3 && t.dim(1) == cfg.num_heads, "{}: {} is {}, expected [rows, {}, n]", sexp_path, k,
                    t.describe(), cfg.num_heads);
          tk.set_kept(si, l, static_cast<int>(t.dim(0)), t.dim(2), golden_kept(sexp, k, t, sched.offset(si + 1)));
          ++compressions;
        }
      if (print)
        fmt::print("golden {} ScaleKV run: {} recorded compressions replayed (policy: {})\n", name, compressions,
                   inner ? inner->name() : "none - " + why);
      Recorder rec(0);
      InfinityRunOptions o;
      o.teacher = &sbits;
      o.observer = &rec;
      o.policy = &tk;
      o.select_at_last_scale = inner != nullptr;
      const GenerateResult res = run(o);
      compare_run(rep, "scalekv ", sexp, rec, res, cfg, g, sbits, opt);
      if (inner) compare_selections(rep, sexp, tk, cfg.num_heads, opt);
      else skv_note = why;
    }
  }
  if (print) {
    fmt::print("{} {}\n", rep.verdict(), name);
    if (!skv_note.empty())
      fmt::print("SKIP {} (ScaleKV scores, pooled scores, kept tokens): {}\n", name, skv_note);
  }
  return {rep.ok() ? GoldenStatus::Pass : GoldenStatus::Fail, rep.ok() ? "" : "beyond tolerance or tensors missing"};
}

}  // namespace skv
