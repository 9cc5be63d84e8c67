#include "runtime/models/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

namespace skv {

int64_t sample_logits(float* logits, int64_t n, const SamplingParams& p, float u) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  if (p.top_k == 1) return std::max_element(logits, logits + n) - logits;
  if (p.top_k > 0 && p.top_k < n) {
    std::vector<float> tmp(logits, logits + n);
    std::nth_element(tmp.begin(), tmp.begin() + (p.top_k - 1), tmp.end(), std::greater<float>());
    const float kth = tmp[p.top_k - 1];
    for (int64_t i = 0; i < n; ++i)
      if (logits[i] < kth) logits[i] = kNegInf;
  }
  const float mx = *std::max_element(logits, logits + n);
  if (p.top_p > 0.0f) {
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return logits[a] < logits[b]; });
    double total = 0;
    for (int64_t i = 0; i < n; ++i) total += logits[i] == kNegInf ? 0.0 : std::exp(static_cast<double>(logits[i] - mx));
    double cum = 0;
    std::vector<int64_t> drop;
    for (int64_t j = 0; j + 1 < n; ++j) {  // the largest (last) entry always stays
      const float v = logits[order[j]];
      cum += v == kNegInf ? 0.0 : std::exp(static_cast<double>(v - mx)) / total;
      if (cum <= 1.0 - p.top_p) drop.push_back(order[j]);
    }
    for (int64_t i : drop) logits[i] = kNegInf;
  }
  double total = 0;
  for (int64_t i = 0; i < n; ++i) total += logits[i] == kNegInf ? 0.0 : std::exp(static_cast<double>(logits[i] - mx));
  const double target = static_cast<double>(u) * total;
  double cum = 0;
  int64_t last = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (logits[i] == kNegInf) continue;
    cum += std::exp(static_cast<double>(logits[i] - mx));
    last = i;
    if (cum > target) return i;
  }
  return last >= 0 ? last : 0;
}

}  // namespace skv
