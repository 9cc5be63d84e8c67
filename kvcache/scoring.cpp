// scoring.cpp - window scores from the backend, selection per (row, head) on the host (see scoring.h).
#include "kvcache/scoring.h"

#include <limits>

#include "runtime/check.h"

namespace skv {

void score_and_select(const CompressionInput& in, const ScoringSpec& spec, int64_t budget, std::vector<int32_t>& kept,
                      const SelectionTrace* trace) {
  SKV_CHECK(spec.q != nullptr, "internal: a scoring policy got no queries");
  const int64_t R = in.rows, H = in.heads, total = in.total();
  SKV_CHECK(budget >= static_cast<int64_t>(spec.window.cache_pos.size()) && budget <= total,
            "layer {} scale {}: budget {} is below the observation window of {} tokens", in.layer, in.scale, budget,
            spec.window.cache_pos.size());
  Backend& be = *in.backend;
  Tensor scores = be.empty({R, H, total}, DType::F32, MemCategory::Workspace);
  be.window_scores(*spec.q, spec.window.query_idx, in.all_segments(), spec.scale, spec.mode, scores);
  Tensor host = be.device() == Device::CPU ? scores : be.download(scores);
  kept.resize(static_cast<size_t>(R * H * budget));
  std::vector<float> row(static_cast<size_t>(total));
  RowSelection sel;
  for (int64_t r = 0; r < R; ++r)
    for (int64_t h = 0; h < H; ++h) {
      const float* s = host.f32() + (r * H + h) * total;
      std::copy(s, s + total, row.begin());
      if (spec.mask_window_keys)
        for (int64_t p : spec.window.cache_pos) row[p] = -std::numeric_limits<float>::infinity();
      select_row(row.data(), total, spec.window.cache_pos, budget, spec.pool, spec.kernel, sel);
      SKV_CHECK(static_cast<int64_t>(sel.kept.size()) == budget, "internal: selected {} of {} tokens", sel.kept.size(),
                budget);
      for (int64_t j = 0; j < budget; ++j) kept[(r * H + h) * budget + j] = static_cast<int32_t>(sel.kept[j]);
      if (trace && *trace) (*trace)(in, static_cast<int>(r), static_cast<int>(h), row, sel);
    }
}

}  // namespace skv
