#include <fmt/core.h>

#include <fmt/ranges.h>

#include <cmath>
#include <map>

#include "launcher/golden.h"
#include "runtime/check.h"
#include "runtime/safetensors.h"

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

void GoldenReport::not_checked(const std::string& what, const std::string& why) {
  ++not_checked_;
  if (print_) fmt::print("  {:<28} not checked: {}\n", what, why);
}

std::string GoldenReport::verdict() const {
  std::string v = ok_ ? "PASS" : "FAIL";
  if (not_checked_ > 0) v += fmt::format(" ({} optional tensor group{} not checked)", not_checked_, not_checked_ > 1 ? "s" : "");
  return v;
}

bool check_golden_tensors(GoldenReport& rep, const SafeTensors& exp, const GoldenTensorSpec& spec,
                          const std::string& prefix) {
  bool all = true;
  for (const auto& n : spec.required)
    if (!exp.contains(n)) {
      rep.fail(prefix + n, fmt::format("required tensor is missing from {}", exp.path()));
      all = false;
    }
  // Absent optional tensors, one line per stem: "x_in.{7,8,9}".
  std::map<std::string, std::vector<std::string>> absent;
  for (const auto& n : spec.optional)
    if (!exp.contains(n)) {
      const size_t dot = n.find('.');
      absent[dot == std::string::npos ? n : n.substr(0, dot)].push_back(dot == std::string::npos ? "" : n.substr(dot + 1));
    }
  for (const auto& [stem, rest] : absent) {
    const bool one = rest.size() == 1;
    const std::string what = one ? (rest[0].empty() ? stem : stem + "." + rest[0])
                                 : fmt::format("{}.{{{}}}", stem, fmt::join(rest, ","));
    rep.not_checked(prefix + what, fmt::format("absent from {} (optional)", exp.path()));
  }
  return all;
}

std::vector<int64_t> golden_indices(const SafeTensors& exp, const std::string& name, int64_t count, int64_t lo,
                                    int64_t hi, const std::string& what) {
  const TensorEntry& e = exp.entry(name);
  SKV_CHECK(e.dtype == DType::I64 || e.dtype == DType::I32, "{}: tensor '{}' has dtype {}, expected I64 or I32 ({})",
            exp.path(), name, dtype_name(e.dtype), what);
  const Tensor t = exp.load_raw(name, MemCategory::Workspace);
  SKV_CHECK(t.numel() == count, "{}: tensor '{}' has {} values, the golden's run needs {} ({})", exp.path(), name,
            t.numel(), count, what);
  std::vector<int64_t> v(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    v[i] = e.dtype == DType::I64 ? t.data<int64_t>()[i] : t.data<int32_t>()[i];
    SKV_CHECK(v[i] >= lo && v[i] < hi, "{}: tensor '{}' holds {} at position {}, outside [{}, {}) ({}): corrupted golden?",
              exp.path(), name, v[i], i, lo, hi, what);
  }
  return v;
}

}  // namespace skv
