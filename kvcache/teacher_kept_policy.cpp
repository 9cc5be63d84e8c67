#include "kvcache/teacher_kept_policy.h"

#include "runtime/check.h"

namespace skv {

TeacherKeptPolicy::TeacherKeptPolicy(KVPolicy* inner, int global_heads) : inner_(inner), heads_(global_heads) {
  SKV_CHECK(global_heads > 0, "TeacherKeptPolicy: {} heads", global_heads);
}

std::string TeacherKeptPolicy::name() const {
  return inner_ ? "teacher-kept(" + inner_->name() + ")" : "teacher-kept";
}

void TeacherKeptPolicy::set_kept(int scale, int layer, int rows, int64_t n, std::vector<int32_t> kept) {
  SKV_CHECK(rows > 0 && n > 0 && static_cast<int64_t>(kept.size()) == rows * heads_ * n,
            "recorded kept indices of scale {} layer {}: {} values for {} rows x {} heads x {}", scale, layer,
            kept.size(), rows, heads_, n);
  for (int64_t rh = 0; rh < static_cast<int64_t>(rows) * heads_; ++rh)
    for (int64_t j = 0; j < n; ++j)
      SKV_CHECK(kept[rh * n + j] >= 0 && (j == 0 || kept[rh * n + j] > kept[rh * n + j - 1]),
                "recorded kept indices of scale {} layer {} must be ascending and non-negative", scale, layer);
  kept_[{scale, layer}] = Rec{rows, n, std::move(kept)};
}

int64_t TeacherKeptPolicy::budget(int layer, int scale, int64_t total) const {
  const auto it = kept_.find({scale, layer});
  const int64_t recorded = it == kept_.end() ? total : std::min(total, it->second.n);
  if (inner_) {
    const int64_t ib = std::min(total, inner_->budget(layer, scale, total));
    if (ib != recorded) mismatches_[{scale, layer}] = {ib, recorded};
  }
  return recorded;
}

Tensor TeacherKeptPolicy::select(const CompressionInput& in, int64_t budget) {
  const auto it = kept_.find({in.scale, in.layer});
  SKV_CHECK(it != kept_.end(), "internal: teacher-kept select at scale {} layer {} without a recording", in.scale, in.layer);
  const Rec& rec = it->second;
  const int R = in.rows, Hl = in.heads;
  const int64_t total = in.hist_len + in.cur_len;
  SKV_CHECK(R == rec.rows && in.head_offset + Hl <= heads_ && budget == rec.n,
            "recorded kept indices of scale {} layer {} are [{}, {}, {}], the run has {} rows, heads {}..{}, budget {}",
            in.scale, in.layer, rec.rows, heads_, rec.n, R, in.head_offset, in.head_offset + Hl - 1, budget);
  if (inner_) {
    Selection s;
    s.scale = in.scale;
    s.layer = in.layer;
    s.head_offset = in.head_offset;
    s.local_heads = Hl;
    s.rows = R;
    s.total = total;
    s.budget = std::min(total, inner_->budget(in.layer, in.scale, total));
    s.replayed = budget;
    s.record.total = total;
    if (s.budget < total) {
      CompressionInput in2 = in;
      in2.record = &s.record;
      s.kept = kept_on_host(*in.backend, inner_->select(in2, s.budget));
    }
    selections_.push_back(std::move(s));
  }
  std::vector<int32_t> kept(static_cast<size_t>(R) * Hl * budget);
  for (int r = 0; r < R; ++r)
    for (int h = 0; h < Hl; ++h) {
      const int32_t* src = rec.kept.data() + (static_cast<int64_t>(r) * heads_ + in.head_offset + h) * rec.n;
      int32_t* dst = kept.data() + (static_cast<int64_t>(r) * Hl + h) * budget;
      for (int64_t j = 0; j < budget; ++j) {
        SKV_CHECK(src[j] < total, "recorded kept index {} of scale {} layer {} is beyond the {} cached tokens", src[j],
                  in.scale, in.layer, total);
        dst[j] = src[j];
      }
    }
  return kept_on_backend(*in.backend, kept, R, Hl, budget);
}

}  // namespace skv
