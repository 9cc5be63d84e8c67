// official_rounding.h - the places where the official PyTorch/numpy code turns floating point into a
// discrete choice, reproduced operation for operation, so that a tie in exact arithmetic is broken by
// the same float64 rounding the official code sees. README "Exactness audit" lists every such place
// and the test that pins it.
//
//   numpy_linspace   numpy.linspace(start, stop, num) (endpoint=True): y[i] = i * step + start with
//                    step = (stop - start) / (num - 1), and the last point set to `stop` exactly.
//                    (a + (b - a) * i / (num - 1) differs by an ulp: at S = 10 that moved si = 7 to
//                    another Phi conv.)
//   phi_tick_index   VAR's Phi choice quant_resi[si / (S - 1)]: np.argmin(np.abs(ticks - at)), where
//                    ticks = linspace(1/3/K, 1-1/3/K, K) if K == 4 else linspace(1/2/K, 1-1/2/K, K);
//                    argmin takes the first index of an exact tie.
#pragma once

#include <vector>

namespace skv {

std::vector<double> numpy_linspace(double start, double stop, int num);

// The tick table of K Phi convs (PhiPartiallyShared K = share_quant_resi, PhiNonShared K = S).
std::vector<double> phi_ticks(int K);

// Index of the Phi conv scale si of an S-scale schedule uses, over `ticks` (phi_ticks(K)).
int phi_tick_index(const std::vector<double>& ticks, int si, int S);

}  // namespace skv
