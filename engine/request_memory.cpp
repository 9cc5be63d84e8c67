// request_memory.cpp - see request_memory.h.
#include "engine/request_memory.h"

#include <algorithm>

#include "runtime/check.h"

namespace skv {

void add_request_memory(std::vector<StepDemand>& demand, const RequestMemory& m) {
  SKV_CHECK(m.state_bytes >= 0 && m.bytes_per_row_token >= 0 && m.step_bytes >= 0 && m.first_step_bytes >= 0,
            "internal: negative request memory");
  for (size_t t = 0; t < demand.size(); ++t) {
    StepDemand& d = demand[t];
    int64_t b = checked_add(m.state_bytes, m.step_bytes, "request memory of a step");
    b = checked_add(b, checked_mul(m.bytes_per_row_token, d.step_tokens, "activation bytes of a step"),
                    "request memory of a step");
    if (t == 0) b = checked_add(b, m.first_step_bytes, "request memory of its first step");
    d.other_bytes = checked_add(d.other_bytes, b, "request memory of a step");
  }
}

DecodeProbe measure_decode(Backend& be, int64_t pixels, const std::function<void()>& decode) {
  DecodeProbe p;
  p.pixels = pixels;
  be.synchronize();
  const int64_t before = be.allocator().stats().total_current;
  be.allocator().reset_peaks();
  decode();
  be.synchronize();
  p.bytes = be.allocator().stats().total_peak - before;
  return p;
}

int64_t decode_bytes(const DecodeProbe& probe, int64_t images, int64_t pixels) {
  if (images <= 0 || probe.bytes <= 0) return 0;
  SKV_CHECK(probe.pixels > 0 && pixels > 0, "internal: decode probe of {} pixels for images of {}", probe.pixels, pixels);
  // bytes x max(1, pixels / probe.pixels), rounded up; an overflow is an error, never a wrapped figure.
  const int64_t per_image = pixels <= probe.pixels
                                ? probe.bytes
                                : checked_mul(probe.bytes / probe.pixels + 1, pixels, "decoder bytes of an image");
  return checked_mul(per_image, images, "decoder bytes of a request");
}

int64_t selection_bytes(const KVPlan& plan, int64_t rows, int64_t local_heads) {
  const int64_t keys = *std::max_element(plan.layer_max.begin(), plan.layer_max.end()) + plan.transient_tokens;
  return checked_mul(4 * 4 * rows * local_heads, keys, "selection bytes of a step");
}

int64_t block_bytes_per_row_token(int64_t C, int64_t local_C, int64_t local_ffn, int64_t vocab, bool cross_attention) {
  // Blocks (every request of the step at once): packed x, norm h, y after attention, FFN norm and output (5C);
  // qkv (3), attention output (1), q, raw q, per-head k, v (4) of the local width; the FFN hidden.
  // Cross-attention adds its norm and output (2C), q, its per-head copy and output (3 local widths).
  int64_t block = 5 * C + 8 * local_C + local_ffn;
  if (cross_attention) block += 2 * C + 3 * local_C;
  // Head (one request after another, the packed x still held): norm (C), logits, their host copy, the CFG mix
  // and the sampler's copy (at most 3 x V per row). Summing max(block, head) over the requests of a step
  // bounds both the blocks' sum and the packed x plus one request's head.
  const int64_t head = 2 * C + 3 * vocab;
  return checked_mul(std::max(block, head), int64_t{4}, "activation bytes per token");
}

}  // namespace skv
