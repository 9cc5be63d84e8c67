// var_generate.h - class-conditional generation with VAR: the official autoregressive_infer_cfg loop
// (CFG ramp t = cfg * si / (S - 1) on logits, top-k/top-p sampling, f_hat accumulation, next-scale
// input), with the cache and KV policy of kvcache/ and optional teacher forcing for parity checks.
#pragma once

#include <vector>

#include "kvcache/policy.h"
#include "runtime/models/generation.h"
#include "runtime/models/request_kv.h"
#include "runtime/models/var_model.h"
#include "runtime/models/vqvae.h"

namespace skv {

struct VarRequest {
  std::vector<int64_t> labels;        // B class labels
  double cfg = 1.5;  // float64 as the official Python scalar: t = cfg * si / (S - 1) rounds to float once
  SamplingParams sampling;
  uint64_t seed = 0;
  std::vector<uint32_t> image_ids;    // per image RNG stream id; default 0..B-1
};

struct VarRunOptions {
  KVPolicy* policy = nullptr;                                // null: full cache
  const std::vector<std::vector<int64_t>>* teacher = nullptr;  // per scale [B * l]: feed these tokens
  GenerationObserver* observer = nullptr;
  ProgressFn progress;
  bool decode = true;
  // Decode only images [decode_begin, decode_end) of the batch (-1: to its end): the engine gives each
  // rank of a tensor-parallel group a share of a request's images, so they decode in parallel.
  int64_t decode_begin = 0, decode_end = -1;
};

// A VAR request in progress, one scale at a time (see Generation). The constructor checks the request,
// prepares its conditioning and allocates its KV cache from the memory plan; step() runs the next
// scale of several generations of one model as one packed forward pass (VarModel::forward_scales),
// then CFG, sampling and the next input of each. A generation's tokens do not depend on what it was
// batched with: sampling keys on (seed, image id, scale, token).
class VarGeneration final : public Generation {
 public:
  // kv_pages: the engine's KV page pool, shared with the other requests in flight (null: alone); see RequestKV.
  VarGeneration(const VarModel& model, const VQVAE& vae, VarRequest req, VarRunOptions opt,
                KVPagePool* kv_pages = nullptr);
  int num_scales() const override { return sched_.num_scales(); }
  int scales_done() const override { return si_; }
  int images() const { return static_cast<int>(req_.labels.size()); }
  const VarRequest& request() const { return req_; }
  GenerateResult finish() override;
  Tensor preview() const override;
  // The next scale of every generation in `batch` (distinct, not done, all of one model and decoder).
  static void step(const std::vector<VarGeneration*>& batch);

 private:
  const VarModel& model_;
  const VQVAE& vae_;
  VarRequest req_;
  VarRunOptions opt_;
  Schedule sched_;
  GenerateResult res_;
  RequestKV kv_;
  VarModel::Cond cond_;
  Tensor x_, f_hat_;
  int si_ = 0;
  double t_start_ = 0, t_scale_ = 0;
  bool finished_ = false;
};

// One request from start to end: a VarGeneration stepped alone.
GenerateResult var_generate(const VarModel& model, const VQVAE& vae, const VarRequest& req, const VarRunOptions& opt);

}  // namespace skv
