// sampler.h - top-k / top-p sampling of one token from a row of logits.
// The filtering follows the official VAR helper (sample_with_top_k_top_p_): top-k removes every logit
// strictly below the k-th largest; top-p sorts ascending and removes the prefix whose cumulative
// softmax is <= 1 - p (the largest always stays). The draw itself is an inverse-CDF lookup with a
// counter-based uniform (rng.h), so it does not depend on batch layout. top_k == 1 is greedy: the
// first maximum, no random number used.
#pragma once

#include <cstdint>

namespace skv {

struct SamplingParams {
  int top_k = 0;      // 0: off
  float top_p = 0.0;  // 0: off
};

// `logits` (n entries) is used as scratch. `u` is uniform in [0, 1).
int64_t sample_logits(float* logits, int64_t n, const SamplingParams& p, float u);

}  // namespace skv
