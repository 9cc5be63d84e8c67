// The official code's float-to-discrete decisions (runtime/models/official_rounding.h) against numpy
// itself, computed at test time by Debian's python3-numpy (a declared dependency, scripts/setup.sh):
// the Phi tick index for every schedule length S = 2..16 and every K = 1..6, and numpy.linspace bit
// for bit on awkward endpoints.
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <tuple>

#include "runtime/models/official_rounding.h"
#include "test_util.h"

namespace skv {

namespace {

// Runs a Python snippet with Debian's interpreter (the one that has numpy) and returns its stdout.
std::string run_python(const std::string& code, int* status) {
  const std::string path = ::testing::TempDir() + "skv_official_rounding.py";
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) return *status = -1, "";
  std::fputs(code.c_str(), f);
  std::fclose(f);
  return test::run_captured("/usr/bin/python3 " + path, status);
}

}  // namespace

TEST(OfficialRounding, PhiTickIndexMatchesNumpyForEveryScheduleAndK) {
  // The official rule (FoundationVision/VAR models/quant.py, PhiPartiallyShared/PhiNonShared).
  const std::string code = R"(import numpy as np
for K in range(1, 7):
    ticks = np.linspace(1/3/K, 1-1/3/K, K) if K == 4 else np.linspace(1/2/K, 1-1/2/K, K)
    for S in range(2, 17):
        for si in range(S):
            print(K, S, si, np.argmin(np.abs(ticks - si/(S-1))).item())
)";
  int status = 0;
  const std::string out = run_python(code, &status);
  ASSERT_EQ(status, 0) << "/usr/bin/python3 with numpy is required (scripts/setup.sh installs it): " << out;
  std::istringstream in(out);
  int K, S, si, want, rows = 0, mismatches = 0;
  while (in >> K >> S >> si >> want) {
    const int got = phi_tick_index(phi_ticks(K), si, S);
    EXPECT_EQ(got, want) << "K " << K << " S " << S << " si " << si;
    mismatches += got != want;
    ++rows;
  }
  EXPECT_EQ(rows, 6 * (2 + 16) * 15 / 2) << out.substr(0, 400);
  EXPECT_EQ(mismatches, 0);
}

TEST(OfficialRounding, ReleasedTenScaleScheduleUsesTheOfficialPhis) {
  // VAR-d16..d30 (256 px) and d36 (512 px) both run ten scales with share_quant_resi 4; si = 2 and 7
  // are exact ties in real arithmetic that float64 breaks (golden README: 0,0,1,1,1,2,2,3,3 for si 0..8).
  const std::vector<int> want = {0, 0, 1, 1, 1, 2, 2, 3, 3, 3};
  const auto ticks = phi_ticks(4);
  for (int si = 0; si < 10; ++si) EXPECT_EQ(phi_tick_index(ticks, si, 10), want[si]) << "si " << si;
}

TEST(OfficialRounding, LinspaceIsNumpysBitForBit) {
  const std::string code = R"(import numpy as np
cases = [(1/12, 11/12, 4), (1/2/6, 1-1/2/6, 6), (0.1, 0.7, 7), (-1.5, 2.25, 11), (0.3, 0.3, 5), (1/3, 1.0, 1), (0.0, 1.0, 16)]
for a, b, n in cases:
    print(a.hex(), b.hex(), n, ' '.join(float(v).hex() for v in np.linspace(a, b, n)))
)";
  int status = 0;
  const std::string out = run_python(code, &status);
  ASSERT_EQ(status, 0) << out;
  std::istringstream in(out);
  std::string line;
  int cases = 0;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string ah, bh;
    int n;
    ls >> ah >> bh >> n;
    const double a = std::strtod(ah.c_str(), nullptr), b = std::strtod(bh.c_str(), nullptr);
    const auto got = numpy_linspace(a, b, n);
    ASSERT_EQ(static_cast<int>(got.size()), n);
    for (int i = 0; i < n; ++i) {
      std::string vh;
      ls >> vh;
      EXPECT_EQ(got[i], std::strtod(vh.c_str(), nullptr)) << "linspace(" << a << ", " << b << ", " << n << ")[" << i << "]";
    }
    ++cases;
  }
  EXPECT_EQ(cases, 7);
}

}  // namespace skv
