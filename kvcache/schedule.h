// schedule.h - the scale schedule of a next-scale-prediction model: (t, h, w) per scale, token
// offsets, and the lengths the KV cache and the planner derive from it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace skv {

struct ScaleShape {
  int t = 1, h = 1, w = 1;
  int64_t tokens() const { return static_cast<int64_t>(t) * h * w; }
};

class Schedule {
 public:
  Schedule() = default;
  explicit Schedule(std::vector<ScaleShape> scales);
  static Schedule square(const std::vector<int>& patch_nums);  // VAR: pn x pn per scale

  int num_scales() const { return static_cast<int>(scales_.size()); }
  const ScaleShape& operator[](int i) const { return scales_[i]; }
  const std::vector<ScaleShape>& scales() const { return scales_; }
  int64_t tokens(int i) const { return scales_[i].tokens(); }
  int64_t offset(int i) const { return offsets_[i]; }  // tokens of scales < i
  int64_t total() const { return offsets_.back(); }
  // Tokens that are ever cached: everything before the last scale (whose K/V are never stored).
  int64_t cached_before_last() const { return offsets_[scales_.size() - 1]; }
  int64_t max_scale_tokens() const;
  std::string describe() const;  // "1x1 2x2 4x4 ... (10521 tokens)"

 private:
  std::vector<ScaleShape> scales_;
  std::vector<int64_t> offsets_{0};
};

// Infinity's dynamic-resolution schedules (FoundationVision/Infinity infinity/utils/dynamic_resolution.py):
// for an aspect ratio h/w and a pixel budget ("0.06M", "0.25M", "0.60M", "1M") the (h, w) of each
// scale, t set to 1 for images as tools/run_infinity.py does. `h_div_w` must be one of the table's
// ratios (within 1e-3); errors list the valid ratios and budgets.
Schedule infinity_schedule(double h_div_w, const std::string& pixels);
// The pixel budget name for a square-equivalent resolution: 256 -> "0.06M", 512 -> "0.25M",
// 768 -> "0.60M", 1024 -> "1M".
std::string infinity_pixels_for_resolution(int resolution);
std::vector<double> infinity_aspect_ratios();  // every h/w of the table, ascending

}  // namespace skv
