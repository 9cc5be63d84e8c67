#include <fmt/core.h>

#include <cmath>

#include "launcher/golden.h"

namespace skv {

double GoldenReport::compare(const std::string& what, const float* got, const float* want, int64_t n, double tol) {
  double m = 0;
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (!(d <= tol)) ++bad;  // NaN counts as bad
    if (d > m || std::isnan(d)) m = std::isnan(d) ? INFINITY : d;
  }
  const bool pass = bad == 0;
  ok_ = ok_ && pass;
  if (print_)
    fmt::print("  {:<28} max|err| {:9.3g}  (tol {:.0e}, {} values){}\n", what, m, tol, n,
               pass ? "" : fmt::format("  FAIL: {} beyond tolerance", bad));
  return m;
}

void GoldenReport::fraction(const std::string& what, int64_t good, int64_t total, double need, const std::string& note) {
  const double f = total == 0 ? 1.0 : static_cast<double>(good) / static_cast<double>(total);
  const bool pass = f >= need;
  ok_ = ok_ && pass;
  if (print_)
    fmt::print("  {:<28} {:7.3f}% ({}/{}){}{}\n", what, 100.0 * f, good, total, note.empty() ? "" : "  " + note,
               pass ? "" : fmt::format("  FAIL: needs {:.1f}%", 100 * need));
}

void GoldenReport::info(const std::string& what, const std::string& text) {
  if (print_) fmt::print("  {:<28} {}\n", what, text);
}

void GoldenReport::fail(const std::string& what, const std::string& why) {
  ok_ = false;
  if (print_) fmt::print("  {:<28} FAIL: {}\n", what, why);
}

}  // namespace skv
