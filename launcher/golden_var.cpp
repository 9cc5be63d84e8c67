// golden_var.cpp - the VAR golden check (../shared/golden/README.md, VAR section).
// Teacher-forced: the recorded idx of each scale is fed to the next, so one near-tie cannot derail
// the rest; compared: x_in, CFG logits, argmax tokens (where the recorded top-2 margin is large),
// teacher-forcing input and logits, the decoded image. Then a free-running greedy run reports its
// token agreement with the recording.
#include <fmt/core.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "launcher/golden.h"
#include "parallel/communicator.h"
#include "runtime/check.h"
#include "runtime/json_util.h"
#include "runtime/models/model_bundle.h"
#include "runtime/models/var_generate.h"
#include "engine/engine.h"
#include "engine/var_family.h"

namespace skv {

namespace {

class Recorder final : public GenerationObserver {
 public:
  std::map<int, Tensor> x_in, logits, logits_raw, vae_in;
  void on_input(int si, const Tensor& x) override { x_in[si] = x.clone(); }
  void on_logits_raw(int si, const Tensor& l) override { logits_raw[si] = l.clone(); }
  void on_logits(int si, const Tensor& l) override { logits[si] = l.clone(); }
  void on_vae_input(int si, const Tensor& x) override { vae_in[si] = x.clone(); }
};

}  // namespace

// The VAR golden format (../shared/golden/README.md): what a golden must record for the check to mean
// anything, and what it may leave out (reported "not checked").
GoldenTensorSpec var_golden_spec(int S) {
  GoldenTensorSpec s;
  for (int si = 0; si < S; ++si)
    for (const char* n : {"idx", "logits", "x_in"}) s.required.push_back(fmt::format("{}.{}", n, si));
  s.required.push_back("image");
  s.required.push_back("tf_input");
  s.optional = {"tf_logits", "labels"};  // labels: the config's "labels" otherwise
  return s;
}

GoldenOutcome verify_var_golden(const std::string& dir, const std::string& name, const GoldenOptions& opt) {
  const std::string base = dir + "/" + name;
  // A golden whose config is there but whose weights or records are not is broken, not skipped.
  for (const char* suffix : {".var.safetensors", ".vae.safetensors", ".expected.safetensors"})
    if (!std::filesystem::exists(base + suffix)) {
      fmt::print("FAIL {}: {}{} is missing\n", name, base, suffix);
      return {GoldenStatus::Fail, fmt::format("{}{} is missing", base, suffix)};
    }
  const VarConfig cfg = VarConfig::load(base + ".config.json");
  std::unique_ptr<Communicator> local;
  Communicator* comm = opt.comm;
  if (!comm) {
    local = make_local_communicator();
    comm = local.get();
  }
  const bool print = comm->rank() == 0;
  Backend& be = backend_for(opt.device);
  const auto loaded = load_var(cfg, WeightSource::files(base + ".var.safetensors", base + ".vae.safetensors"), be, *comm);
  const VarModel& model = *loaded->model;
  const VQVAE& vae = *loaded->vae;
  SafeTensors exp(base + ".expected.safetensors");
  const int S = static_cast<int>(cfg.patch_nums.size());

  // Labels and recorded tokens are checked before they reach the model: a corrupted index is named
  // with the golden file and tensor, not reported from deep inside an embedding.
  VarRequest req;
  if (exp.contains("labels")) {
    const int64_t n = shape_numel(exp.entry("labels").shape);
    SKV_CHECK(n >= 1 && n <= 4096, "{}: tensor 'labels' has {} values, expected 1 to 4096", exp.path(), n);
    req.labels = golden_indices(exp, "labels", n, 0, cfg.num_classes, "class labels");
  } else {
    const JsonFields j(read_json_file(base + ".config.json"), base + ".config.json");
    for (int64_t v : j.integers("labels")) {
      j.require(v >= 0 && v < cfg.num_classes, "labels", fmt::format("holds {}, outside [0, {})", v, cfg.num_classes));
      req.labels.push_back(v);
    }
    j.require(!req.labels.empty() && req.labels.size() <= 4096, "labels", "must hold 1 to 4096 class labels");
  }
  const int B = static_cast<int>(req.labels.size());
  req.cfg = cfg.cfg;
  req.sampling.top_k = cfg.top_k;
  req.sampling.top_p = cfg.top_p;

  if (print)
    fmt::print("golden {} (var: depth {}, width {}, heads {}, {} scales, {} tokens, B={}) on {}, tp {}\n", name,
               cfg.depth, cfg.embed_dim, cfg.num_heads, S, cfg.schedule().total(), B, be.name(), comm->size());
  GoldenReport rep(print);
  check_golden_tensors(rep, exp, var_golden_spec(S));
  for (int si = 0; si < S; ++si)
    if (!exp.contains(fmt::format("idx.{}", si)) || !exp.contains(fmt::format("logits.{}", si))) {
      if (print) fmt::print("FAIL {}: the teacher-forced run needs every idx.N and logits.N\n", name);
      return {GoldenStatus::Fail, "required tensors missing"};
    }
  std::vector<std::vector<int64_t>> teacher;
  for (int si = 0; si < S; ++si)
    teacher.push_back(golden_indices(exp, fmt::format("idx.{}", si),
                                     static_cast<int64_t>(B) * cfg.patch_nums[si] * cfg.patch_nums[si], 0, cfg.V,
                                     fmt::format("token indices of scale {}, vocabulary {}", si, cfg.V)));
  // Both runs go through the engine (one request each), the path generate and bench serve take.
  VarFamily family(model, vae);
  Recorder rec;
  VarRunOptions o;
  o.teacher = &teacher;
  o.observer = &rec;
  family.attach(0, o);
  GenerateResult tf = Engine::run_one(family, be, *comm, *comm, VarFamily::engine_request(0, req)).gen;

  int64_t agree = 0, total = 0, strict_agree = 0, strict_total = 0;
  double worst_logit = 0;
  for (int si = 0; si < S; ++si) {
    const std::string xn = fmt::format("x_in.{}", si), ln = fmt::format("logits.{}", si);
    if (exp.contains(xn)) {
      Tensor want = exp.load(xn, MemCategory::Workspace);
      SKV_CHECK(want.numel() == rec.x_in[si].numel(), "{}: {} has {} values, this model makes {}", name, xn, want.numel(),
                rec.x_in[si].numel());
      rep.compare(xn, rec.x_in[si].f32(), want.f32(), want.numel(), opt.tol);
    }
    Tensor want = exp.load(ln, MemCategory::Workspace);
    const Tensor& got = rec.logits[si];
    SKV_CHECK(want.numel() == got.numel(), "{}: {} has {} values, this model makes {}", name, ln, want.numel(), got.numel());
    worst_logit = std::max(worst_logit, rep.compare(ln, got.f32(), want.f32(), want.numel(), opt.tol));
    // argmax agreement, strict where the recorded top-2 margin exceeds opt.margin
    const int64_t V = cfg.V, n = want.numel() / V;
    for (int64_t t = 0; t < n; ++t) {
      const float* w = want.f32() + t * V;
      const float* g = got.f32() + t * V;
      const int64_t gi = std::max_element(g, g + V) - g;
      float top1 = -INFINITY, top2 = -INFINITY;
      for (int64_t v = 0; v < V; ++v) {
        if (w[v] > top1) {
          top2 = top1;
          top1 = w[v];
        } else if (w[v] > top2) {
          top2 = w[v];
        }
      }
      const bool same = gi == teacher[si][t];
      agree += same;
      ++total;
      if (top1 - top2 > opt.margin) {
        strict_agree += same;
        ++strict_total;
      }
    }
  }
  rep.fraction("idx (teacher-forced argmax)", agree, total, 0.0, "all tokens");
  rep.fraction("idx where margin > 1e-4", strict_agree, strict_total, 1.0);
  if (exp.contains("tf_input")) {
    Tensor want = exp.load("tf_input", MemCategory::Workspace);  // [B, L-1, Cvae]
    std::vector<float> got;
    for (int64_t b = 0; b < B; ++b)
      for (int si = 1; si < S; ++si) {
        const Tensor& v = rec.vae_in[si];
        const int64_t per = v.numel() / B;
        got.insert(got.end(), v.f32() + b * per, v.f32() + (b + 1) * per);
      }
    if (static_cast<int64_t>(got.size()) == want.numel())
      rep.compare("tf_input", got.data(), want.f32(), want.numel(), opt.tol);
    else
      rep.fail("tf_input", fmt::format("{} values recorded, {} made", want.numel(), got.size()));
  }
  if (exp.contains("tf_logits")) {
    Tensor want = exp.load("tf_logits", MemCategory::Workspace);  // [B, L, V], conditional rows
    std::vector<float> got;
    for (int64_t b = 0; b < B; ++b)
      for (int si = 0; si < S; ++si) {
        const Tensor& v = rec.logits_raw[si];  // [2B, l, V]
        const int64_t per = v.numel() / (2 * B);
        got.insert(got.end(), v.f32() + b * per, v.f32() + (b + 1) * per);
      }
    if (static_cast<int64_t>(got.size()) == want.numel())
      rep.compare("tf_logits (cond rows)", got.data(), want.f32(), want.numel(), opt.tol);
    else
      rep.fail("tf_logits", fmt::format("{} values recorded, {} made", want.numel(), got.size()));
  }
  if (exp.contains("image")) {
    Tensor want = exp.load("image", MemCategory::Workspace);
    if (want.numel() == tf.images.numel())
      rep.compare("image (from recorded idx)", tf.images.f32(), want.f32(), want.numel(), opt.tol);
    else
      rep.fail("image", fmt::format("shape {} recorded, {} made", shape_str(want.shape()), shape_str(tf.images.shape())));
  }
  // Free-running run with the golden's own sampling settings.
  GenerateResult fr = Engine::run_one(family, be, *comm, *comm, VarFamily::engine_request(1, req)).gen;
  int64_t fa = 0, ft = 0;
  for (int si = 0; si < S; ++si)
    for (size_t t = 0; t < teacher[si].size(); ++t) {
      fa += fr.tokens[si][t] == teacher[si][t];
      ++ft;
    }
  rep.fraction("free-running tokens", fa, ft, req.sampling.top_k == 1 ? 0.0 : 0.0,
               req.sampling.top_k == 1 ? "greedy, informational" : "sampled, informational");
  if (print) fmt::print("{} {}\n", rep.verdict(), name);
  return {rep.ok() ? GoldenStatus::Pass : GoldenStatus::Fail, rep.ok() ? "" : "beyond tolerance or tensors missing"};
}

}  // namespace skv
