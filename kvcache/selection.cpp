// selection.cpp - observation windows, the host selection stage, and scoring + selection of a layer
// (see selection.h).
#include "kvcache/selection.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "kvcache/policy.h"
#include "runtime/check.h"
#include "runtime/cuda/kernel_math.h"

namespace skv {

namespace {

int64_t exact_sqrt(int64_t n) {  // s with s * s == n, or -1
  if (n < 0) return -1;
  int64_t s = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(n))));
  while (s * s > n) --s;
  while ((s + 1) * (s + 1) <= n) ++s;
  return s * s == n ? s : -1;
}

}  // namespace

ObsWindow scalekv_reference_window(int64_t cur_len, int64_t key_len, int window) {
  SKV_CHECK(window > 0 && cur_len > 0 && cur_len <= key_len, "observation window {} for a map of {} in {} keys", window,
            cur_len, key_len);
  ObsWindow w;
  const int64_t start = key_len - cur_len;
  const int64_t side = exact_sqrt(cur_len), grid = exact_sqrt(window);
  if (side < 0 || grid < 0 || side < grid) {  // fallback: the last min(window, key_len) cache entries
    const int64_t n = std::min<int64_t>(window, key_len);
    for (int64_t p = key_len - n; p < key_len; ++p) {
      w.cache_pos.push_back(p);
      w.query_idx.push_back(std::clamp<int64_t>(p - start, 0, cur_len - 1));
    }
    return w;
  }
  const int64_t patch = side / grid;
  std::vector<int64_t> pos;
  for (int64_t i = 0; i < grid; ++i)
    for (int64_t j = 0; j < grid; ++j) {
      const int64_t y = std::clamp<int64_t>(i * patch + (patch - 1) / 2, 0, side - 1);
      const int64_t x = std::clamp<int64_t>(j * patch + (patch - 1) / 2, 0, side - 1);
      pos.push_back(y * side + x);
    }
  std::sort(pos.begin(), pos.end());  // torch.unique: ascending, no repeats
  pos.erase(std::unique(pos.begin(), pos.end()), pos.end());
  for (int64_t p : pos) {
    w.cache_pos.push_back(p + start);
    w.query_idx.push_back(p);
  }
  return w;
}

ObsWindow grid_window(int h, int w, int64_t hist_len, int grid) {
  SKV_CHECK(h > 0 && w > 0 && grid > 0, "observation grid {} over a {}x{} map", grid, h, w);
  const int gh = std::min(grid, h), gw = std::min(grid, w);
  const int ph = h / gh, pw = w / gw;
  ObsWindow o;
  for (int i = 0; i < gh; ++i)
    for (int j = 0; j < gw; ++j) {
      const int64_t y = i * ph + (ph - 1) / 2, x = j * pw + (pw - 1) / 2;
      o.query_idx.push_back(y * w + x);
      o.cache_pos.push_back(hist_len + y * w + x);
    }
  return o;
}

ObsWindow last_tokens_window(int64_t cur_len, int64_t hist_len, int window) {
  SKV_CHECK(window > 0 && cur_len > 0, "observation window {} for a map of {}", window, cur_len);
  ObsWindow o;
  for (int64_t i = std::max<int64_t>(0, cur_len - window); i < cur_len; ++i) {
    o.query_idx.push_back(i);
    o.cache_pos.push_back(hist_len + i);
  }
  return o;
}

void topk_lower_index(const float* v, int64_t n, int64_t k, std::vector<int64_t>& out) {
  k = std::clamp<int64_t>(k, 0, n);
  out.resize(static_cast<size_t>(n));
  std::iota(out.begin(), out.end(), 0);
  auto better = [v](int64_t a, int64_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); };
  if (k < n) {
    std::nth_element(out.begin(), out.begin() + k, out.end(), better);
    out.resize(static_cast<size_t>(k));
  }
  std::sort(out.begin(), out.end(), better);
}

void select_row(const float* scores, int64_t n, const KeepSpec& spec, RowSelection& out) {
  SKV_CHECK(spec.kernel > 0 && spec.kernel % 2 == 1, "pooling kernel {} must be odd and positive", spec.kernel);
  for (size_t i = 0; i < spec.window.size(); ++i)
    SKV_CHECK(spec.window[i] >= 0 && spec.window[i] < n && (i == 0 || spec.window[i] > spec.window[i - 1]),
              "observation window columns must be ascending and distinct in [0, {})", n);
  const std::vector<int32_t> win(spec.window.begin(), spec.window.end());
  out.pooled.resize(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j)  // the pooling kernel's own function, so host and device pool alike
    out.pooled[j] = kmath::pool_at(scores, n, j, spec.kernel, spec.pool == PoolKind::Max, win.data(),
                                   static_cast<int>(win.size()), spec.mask_window_keys);
  // Candidates are the non-window columns only; a window column never competes (so it is never kept twice).
  std::vector<float> cand(out.pooled);
  std::vector<int64_t> cols;
  cols.reserve(static_cast<size_t>(n));
  size_t w = 0;
  for (int64_t c = 0; c < n; ++c) {
    if (w < spec.window.size() && spec.window[w] == c) {
      ++w;
      continue;
    }
    cand[cols.size()] = out.pooled[c];
    cols.push_back(c);
  }
  const int64_t nw = static_cast<int64_t>(spec.window.size());
  const int64_t keep = std::max<int64_t>(0, std::min(spec.budget, n) - nw);
  std::vector<int64_t> order;
  topk_lower_index(cand.data(), static_cast<int64_t>(cols.size()), keep, order);  // ranks among candidates
  out.topk.resize(order.size());
  for (size_t i = 0; i < order.size(); ++i) out.topk[i] = cols[order[i]];  // column order = candidate order
  out.kept = out.topk;
  out.kept.insert(out.kept.end(), spec.window.begin(), spec.window.end());
  std::sort(out.kept.begin(), out.kept.end());
}

namespace {

void check_keep_spec(const Tensor& scores, const KeepSpec& spec) {
  SKV_CHECK(scores.defined() && scores.dtype() == DType::F32 && scores.ndim() == 3,
            "KV selection: scores must be F32 [rows, heads, keys], got {}", scores.defined() ? scores.describe() : "none");
  const int64_t n = scores.dim(2), nw = static_cast<int64_t>(spec.window.size());
  SKV_CHECK(n <= 0x7fffffff && scores.dim(0) * scores.dim(1) <= 0x7fffffff, "KV selection: {} is too large",
            scores.describe());
  SKV_CHECK(nw <= kMaxKeepWindow, "KV selection: an observation window of {} tokens; at most {}", nw, kMaxKeepWindow);
  for (int64_t i = 0; i < nw; ++i)
    SKV_CHECK(spec.window[i] >= 0 && spec.window[i] < n && (i == 0 || spec.window[i] > spec.window[i - 1]),
              "KV selection: observation window columns must be ascending and distinct in [0, {})", n);
  SKV_CHECK(spec.budget >= nw && spec.budget <= n, "KV selection: budget {} must lie in [{} (the window), {} (all tokens)]",
            spec.budget, nw, n);
  SKV_CHECK(spec.kernel > 0 && spec.kernel % 2 == 1, "KV selection: pooling kernel {} must be odd and positive",
            spec.kernel);
}

}  // namespace

Tensor select_kept(Backend& be, const Tensor& scores, const KeepSpec& spec) {
  check_keep_spec(scores, spec);
  const int64_t R = scores.dim(0), H = scores.dim(1), n = scores.dim(2);
  Tensor kept = be.empty({R, H, spec.budget}, DType::I32, MemCategory::Workspace);
  if (be.device() != Device::CPU) {
    be.select_kept(scores, spec, kept);
    return kept;
  }
  RowSelection sel;
  for (int64_t rh = 0; rh < R * H; ++rh) {
    select_row(scores.f32() + rh * n, n, spec, sel);
    std::copy(sel.kept.begin(), sel.kept.end(), kept.data<int32_t>() + rh * spec.budget);
  }
  return kept;
}

Tensor score_and_select(const CompressionInput& in, const ScoringSpec& spec, int64_t budget, const SelectionTrace* trace) {
  SKV_CHECK(spec.q != nullptr, "internal: a scoring policy got no queries");
  const int64_t R = in.rows, H = in.heads, total = in.total();
  SKV_CHECK(budget >= static_cast<int64_t>(spec.window.cache_pos.size()) && budget <= total,
            "layer {} scale {}: budget {} is below the observation window of {} tokens", in.layer, in.scale, budget,
            spec.window.cache_pos.size());
  Backend& be = *in.backend;
  Tensor scores = be.empty({R, H, total}, DType::F32, MemCategory::Workspace);
  be.window_scores(*spec.q, spec.window.query_idx, in.all_segments(), spec.scale, spec.mode, scores);
  KeepSpec keep;
  keep.window = spec.window.cache_pos;
  keep.mask_window_keys = spec.mask_window_keys;
  keep.pool = spec.pool;
  keep.kernel = spec.kernel;
  keep.budget = budget;
  Tensor kept = select_kept(be, scores, keep);
  if (trace && *trace) {  // parity checks: what each (row, head) saw and chose, from the backend's own result
    const Tensor hs = be.device() == Device::CPU ? scores : be.download(scores);
    const Tensor hk = be.device() == Device::CPU ? kept : be.download(kept);
    std::vector<float> row(static_cast<size_t>(total));
    RowSelection sel;
    for (int64_t r = 0; r < R; ++r)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t rh = r * H + h;
        select_row(hs.f32() + rh * total, total, keep, sel);
        sel.kept.assign(hk.data<int32_t>() + rh * budget, hk.data<int32_t>() + (rh + 1) * budget);
        std::copy(hs.f32() + rh * total, hs.f32() + (rh + 1) * total, row.begin());
        if (keep.mask_window_keys)
          for (int64_t p : keep.window) row[p] = -std::numeric_limits<float>::infinity();
        (*trace)(in, static_cast<int>(r), static_cast<int>(h), row, sel);
      }
  }
  return kept;
}

}  // namespace skv
