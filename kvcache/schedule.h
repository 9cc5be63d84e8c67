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

}  // namespace skv
