#include "runtime/models/official_rounding.h"

#include <cmath>

#include "runtime/check.h"

namespace skv {

std::vector<double> numpy_linspace(double start, double stop, int num) {
  SKV_CHECK(num >= 0, "linspace: num {} is negative", num);
  std::vector<double> y(static_cast<size_t>(num));
  const double delta = stop - start;
  if (num > 1) {
    const double step = delta / (num - 1);
    for (int i = 0; i < num; ++i) {
      // numpy: y = arange(num) * step (or / div * delta when step == 0), then y += start
      const double v = step == 0.0 ? static_cast<double>(i) / (num - 1) * delta : static_cast<double>(i) * step;
      y[i] = v + start;
    }
    y[num - 1] = stop;
  } else if (num == 1) {
    y[0] = 0.0 * delta + start;
  }
  return y;
}

std::vector<double> phi_ticks(int K) {
  SKV_CHECK(K >= 1, "phi_ticks: K {} must be positive", K);
  // Python: 1/3/K is (1/3)/K and 1-1/3/K is 1 - ((1/3)/K), both in float64.
  const double a = K == 4 ? 1.0 / 3.0 / K : 1.0 / 2.0 / K;
  return numpy_linspace(a, 1.0 - a, K);
}

int phi_tick_index(const std::vector<double>& ticks, int si, int S) {
  SKV_CHECK(!ticks.empty(), "phi_tick_index: no ticks");
  // quant_resi[si / (SN - 1)]: Python true division in float64 (S == 1 never reaches it: the
  // official loop would divide by zero; a one-scale schedule uses tick 0).
  const double at = S <= 1 ? 0.0 : static_cast<double>(si) / static_cast<double>(S - 1);
  int best = 0;  // np.argmin: the first index of the minimum wins a tie
  double best_d = std::fabs(ticks[0] - at);
  for (int i = 1; i < static_cast<int>(ticks.size()); ++i) {
    const double d = std::fabs(ticks[i] - at);
    if (d < best_d) best = i, best_d = d;
  }
  return best;
}

}  // namespace skv
