#include "kvcache/schedule.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>

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

namespace {

// ratio2hws of the official table (h, w per scale for h/w >= 1); ratios below 1 swap h and w.
const std::map<double, std::vector<std::pair<int, int>>>& ratio2hws() {
  static const std::map<double, std::vector<std::pair<int, int>>> t = {
      {1.000, {{1, 1}, {2, 2}, {4, 4}, {6, 6}, {8, 8}, {12, 12}, {16, 16}, {20, 20}, {24, 24}, {32, 32}, {40, 40}, {48, 48}, {64, 64}}},
      {1.250, {{1, 1}, {2, 2}, {3, 3}, {5, 4}, {10, 8}, {15, 12}, {20, 16}, {25, 20}, {30, 24}, {35, 28}, {45, 36}, {55, 44}, {70, 56}}},
      {1.333, {{1, 1}, {2, 2}, {4, 3}, {8, 6}, {12, 9}, {16, 12}, {20, 15}, {24, 18}, {28, 21}, {36, 27}, {48, 36}, {60, 45}, {72, 54}}},
      {1.500, {{1, 1}, {2, 2}, {3, 2}, {6, 4}, {9, 6}, {15, 10}, {21, 14}, {27, 18}, {33, 22}, {39, 26}, {48, 32}, {63, 42}, {78, 52}}},
      {1.750, {{1, 1}, {2, 2}, {3, 3}, {7, 4}, {11, 6}, {14, 8}, {21, 12}, {28, 16}, {35, 20}, {42, 24}, {56, 32}, {70, 40}, {84, 48}}},
      {2.000, {{1, 1}, {2, 2}, {4, 2}, {6, 3}, {10, 5}, {16, 8}, {22, 11}, {30, 15}, {38, 19}, {46, 23}, {60, 30}, {74, 37}, {90, 45}}},
      {2.500, {{1, 1}, {2, 2}, {5, 2}, {10, 4}, {15, 6}, {20, 8}, {25, 10}, {30, 12}, {40, 16}, {50, 20}, {65, 26}, {80, 32}, {100, 40}}},
      {3.000, {{1, 1}, {2, 2}, {6, 2}, {9, 3}, {15, 5}, {21, 7}, {27, 9}, {36, 12}, {45, 15}, {54, 18}, {72, 24}, {90, 30}, {111, 37}}},
  };
  return t;
}

// full_ratio2hws: each ratio r != 1 also as int(1/r * 1000) / 1000 with h and w swapped.
std::vector<std::pair<double, std::vector<std::pair<int, int>>>> full_table() {
  std::vector<std::pair<double, std::vector<std::pair<int, int>>>> out;
  for (const auto& [r, hws] : ratio2hws()) {
    out.emplace_back(r, hws);
    if (r != 1.0) {
      std::vector<std::pair<int, int>> swapped;
      for (auto [h, w] : hws) swapped.emplace_back(w, h);
      out.emplace_back(std::floor(1.0 / r * 1000.0) / 1000.0, swapped);
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  return out;
}

const std::vector<std::pair<std::string, int>>& pixel_lengths() {
  static const std::vector<std::pair<std::string, int>> p = {{"0.06M", 7}, {"0.25M", 10}, {"0.60M", 12}, {"1M", 13}};
  return p;
}

}  // namespace

std::vector<double> infinity_aspect_ratios() {
  std::vector<double> r;
  for (const auto& [ratio, hws] : full_table()) r.push_back(ratio);
  return r;
}

Schedule infinity_schedule(double h_div_w, const std::string& pixels) {
  int len = 0;
  std::vector<std::string> names;
  for (const auto& [name, l] : pixel_lengths()) {
    names.push_back(name);
    if (name == pixels) len = l;
  }
  SKV_CHECK(len > 0, "unknown pixel budget '{}' (valid: {})", pixels, fmt::join(names, ", "));
  const auto table = full_table();
  for (const auto& [ratio, hws] : table) {
    if (std::fabs(ratio - h_div_w) > 1e-3) continue;
    std::vector<ScaleShape> s;
    for (int i = 0; i < len; ++i) s.push_back({1, hws[i].first, hws[i].second});
    return Schedule(std::move(s));
  }
  std::vector<std::string> valid;
  for (const auto& [ratio, hws] : table) valid.push_back(fmt::format("{:.3f}", ratio));
  SKV_FAIL("aspect ratio h/w = {} is not in Infinity's dynamic-resolution table (valid: {})", h_div_w,
           fmt::join(valid, ", "));
}

std::string infinity_pixels_for_resolution(int resolution) {
  switch (resolution) {
    case 256: return "0.06M";
    case 512: return "0.25M";
    case 768: return "0.60M";
    case 1024: return "1M";
  }
  SKV_FAIL("resolution {} is not offered by Infinity's dynamic-resolution table (valid: 256, 512, 768, 1024)", resolution);
}

}  // namespace skv
