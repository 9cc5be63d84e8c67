// request_memory.h - what a request holds or uses outside its KV cache, step by step: the `other_bytes` of its
// admission curve (engine/admission.h), counted when --device-memory gives the engine a memory cap.
// Each family states its request's memory from the model's shape (engine/var_family.cpp,
// engine/infinity_family.cpp) as an upper bound of what the accounting allocator sees, in four parts:
//   state        held from the request's start to its end: its conditioning (AdaLN tables of every block,
//                Infinity's cross-attention K/V of its prompts and its RoPE table), its latent map, the
//                next scale's input;
//   per token    the packed step's working set per query row-token (hidden states, q/k/v, attention output,
//                FFN, logits and their CFG/sampling copies), summed over every buffer a block allocates;
//   per step     what a step needs apart from its queries (the KV policy's key scores and kept indices);
//   first step   what building its conditioning needs once (Infinity: its prompts' encoding, text projections).
// The decoder is measured, not modelled: the engine decodes one image at start and charges a request's
// decode as the decode_bytes of its last step (of every step when it streams previews), scaled by its images
// and pixels; decodes run one after another, so an iteration needs the largest, not the sum. The tests
// compare the curves with the allocator's measured peak (tests/engine/test_device_memory.sh).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "engine/admission.h"
#include "kvcache/planner.h"
#include "runtime/backend.h"

namespace skv {

struct RequestMemory {
  int64_t state_bytes = 0;
  int64_t bytes_per_row_token = 0;
  int64_t step_bytes = 0;
  int64_t first_step_bytes = 0;
};

// Adds the request's memory to its curve: step t gets state + step_bytes + bytes_per_row_token x its query
// row-tokens (+ first_step_bytes at t = 0). Checked arithmetic: an overflow is an error naming the figure.
void add_request_memory(std::vector<StepDemand>& demand, const RequestMemory& m);

// The decoder's working set for one image of `pixels` pixels, measured once (Engine, at start).
struct DecodeProbe {
  int64_t bytes = 0;   // the allocator's peak above what it held before, decoding one image
  int64_t pixels = 0;  // of that image
};
// Runs `decode` (one image of `pixels` latent cells, on `be`) and returns the allocator's peak above what it held.
DecodeProbe measure_decode(Backend& be, int64_t pixels, const std::function<void()>& decode);
// What decoding `images` images of `pixels` pixels each costs, from the probe: linear in images and pixels,
// never below one probed image (a fixed part of the decoder does not shrink with a smaller image).
int64_t decode_bytes(const DecodeProbe& probe, int64_t images, int64_t pixels);

// The KV policy's selection in one step (ScaleKV, SnapKV, PyramidKV): F32 scores and I32 kept indices of one
// layer's keys (its largest store plus the largest scale), with their pooled and host copies: [rows, local
// heads, keys] four times.
int64_t selection_bytes(const KVPlan& plan, int64_t rows, int64_t local_heads);

// F32 working set of a step per query row-token: the larger of the blocks' (packed hidden state, its norm,
// q/k/v and their per-head copies, attention output, projection, FFN hidden and output; every buffer summed: a
// bound, not the exact peak) and the head's (the packed state, norm, logits and their CFG-mixed and sampling
// copies). `cross_attention` adds Infinity's cross-attention buffers.
int64_t block_bytes_per_row_token(int64_t C, int64_t local_C, int64_t local_ffn, int64_t vocab, bool cross_attention);

}  // namespace skv
