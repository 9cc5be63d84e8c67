// var_generate.h - class-conditional generation with VAR: the official autoregressive_infer_cfg loop
// (CFG ramp t = cfg * si / (S - 1) on logits, top-k/top-p sampling, f_hat accumulation, next-scale
// input), with the cache and KV policy of kvcache/ and optional teacher forcing for parity checks.
#pragma once

#include <vector>

#include "kvcache/policy.h"
#include "runtime/models/generation.h"
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
  // Decode only images [decode_begin, decode_end) of the batch (-1: to its end): the ranks of a
  // tensor-parallel group each decode a share, so no rank idles in a collective while one decodes.
  int64_t decode_begin = 0, decode_end = -1;
};

GenerateResult var_generate(const VarModel& model, const VQVAE& vae, const VarRequest& req, const VarRunOptions& opt);

}  // namespace skv
