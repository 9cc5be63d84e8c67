// generation.h - what every model family's generation loop shares: the request, observers that
// verify-golden and benchmarks hook into, per-scale progress and timing.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "runtime/models/sampler.h"
#include "runtime/tensor.h"

namespace skv {

class KVPolicy;

// Callbacks at the points the goldens record. Tensors passed are host copies.
class GenerationObserver {
 public:
  virtual ~GenerationObserver() = default;
  virtual void on_input(int si, const Tensor& x) {}                  // [R, l, C] entering block 0
  virtual void on_block_output(int si, int layer, const Tensor& x) {}  // [R, l, C]
  virtual void on_logits_raw(int si, const Tensor& logits) {}        // [R, l, V] before CFG
  virtual void on_logits(int si, const Tensor& logits) {}            // [B, l, V] after CFG
  virtual void on_tokens(int si, const std::vector<int64_t>& idx) {}  // [B * l]
  virtual void on_vae_input(int si, const Tensor& x) {}              // [B, l, Cvae] next-scale VAE-space map
  // Named intermediate tensors a family records once per request (Infinity: "cond.text_norm",
  // "cond.sos", "cond.ca_kv", "cond.gss", "summed_codes"); see each family's generate header.
  virtual void on_tensor(const std::string& name, const Tensor& t) {}
  // Whether on_block_output is wanted (copies cost time).
  virtual bool wants_block_outputs() const { return false; }
};

struct ScaleTiming {
  int scale = 0;
  int64_t tokens = 0;
  double seconds = 0;
  int64_t kv_store_tokens = 0;  // sum over layers of stored tokens after this scale
};

using ProgressFn = std::function<void(int scale, int num_scales, double seconds)>;

struct GenerateResult {
  std::vector<std::vector<int64_t>> tokens;  // per scale, [B * l] (VAR: indices; Infinity: bits)
  Tensor images;                             // [B, 3, H, W] in [0, 1] (host), undefined if not decoded
  std::vector<ScaleTiming> timings;
  double transformer_seconds = 0, decode_seconds = 0;
  int64_t kv_peak_bytes = 0;       // measured: KV category peak of the allocator during the run
  int64_t kv_store_bytes = 0;      // the most the stores hold at once (the plan's pool)
  int64_t kv_planned_peak_bytes = 0;  // what the memory plan predicted for kv_peak_bytes
  int64_t kv_capped = 0;           // compressions cut to the planned pool (ScaleKV online)
};

// One request's generation, advanced one scale at a time: the unit the engine (engine/engine.h) batches.
// Each family has one (VarGeneration, InfinityGeneration) and a static step(batch) that runs the next
// scale of several of its generations as one pass; its plain generate function is the same loop over a
// batch of one, so every path - generate, verify-golden, the engine - runs the same code.
class Generation {
 public:
  virtual ~Generation() = default;
  virtual int num_scales() const = 0;
  virtual int scales_done() const = 0;
  bool done() const { return scales_done() == num_scales(); }
  // After the last scale: decodes (as the run options say) and returns the result. Once.
  virtual GenerateResult finish() = 0;
  // Every image of the map accumulated over the scales done so far, decoded: [B, 3, H, W] in [0, 1], host
  // memory (the server's streamed previews; after the last scale it is the final image). Any rank.
  virtual Tensor preview() const = 0;
};

// What one scale step sampled for each generation of a batch, made rank 0's on every rank of the TP group
// in ONE broadcast (every rank samples the same values from bit-identical logits; broadcasting rank 0's
// anyway means replicated arithmetic can never split the group). Parts have the same sizes on every rank.
template <class T>
void broadcast_parts(Communicator& comm, std::vector<std::vector<T>>& parts) {
  if (comm.size() == 1) return;
  std::vector<T> all;
  for (const auto& p : parts) all.insert(all.end(), p.begin(), p.end());
  comm.broadcast_host(all.data(), all.size() * sizeof(T), 0);
  auto at = all.begin();
  for (auto& p : parts) {
    std::copy(at, at + static_cast<std::ptrdiff_t>(p.size()), p.begin());
    at += static_cast<std::ptrdiff_t>(p.size());
  }
}

// Converts [B, 3, H, W] in [0, 1] to 8-bit RGB (floor(x * 255 + 0.5), clamped), one buffer per image.
std::vector<std::vector<uint8_t>> images_to_rgb8(const Tensor& images);

}  // namespace skv
