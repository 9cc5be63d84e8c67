#include "kvcache/schedule.h"

#include <algorithm>

#include "runtime/check.h"

namespace skv {

Schedule::Schedule(std::vector<ScaleShape> scales) : scales_(std::move(scales)) {
  SKV_CHECK(!scales_.empty(), "a scale schedule needs at least one scale");
  for (const auto& s : scales_) {
    SKV_CHECK(s.t > 0 && s.h > 0 && s.w > 0, "scale {}x{}x{} has a non-positive side", s.t, s.h, s.w);
    offsets_.push_back(offsets_.back() + s.tokens());
  }
}

Schedule Schedule::square(const std::vector<int>& patch_nums) {
  std::vector<ScaleShape> s;
  for (int pn : patch_nums) s.push_back({1, pn, pn});
  return Schedule(std::move(s));
}

int64_t Schedule::max_scale_tokens() const {
  int64_t m = 0;
  for (const auto& s : scales_) m = std::max(m, s.tokens());
  return m;
}

std::string Schedule::describe() const {
  std::string out;
  for (const auto& s : scales_) {
    if (!out.empty()) out += ' ';
    out += s.t == 1 ? fmt::format("{}x{}", s.h, s.w) : fmt::format("{}x{}x{}", s.t, s.h, s.w);
  }
  return fmt::format("{} ({} tokens)", out, total());
}

}  // namespace skv
