// selection.cpp - observation windows, pooling, top-k with the lower-index tie rule (see selection.h).
#include "kvcache/selection.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "runtime/check.h"

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

void pool1d(const float* in, int64_t n, int kernel, PoolKind kind, float* out) {
  SKV_CHECK(kernel > 0 && kernel % 2 == 1, "pooling kernel {} must be odd and positive", kernel);
  const int64_t pad = kernel / 2;
  for (int64_t j = 0; j < n; ++j) {
    const int64_t a = std::max<int64_t>(0, j - pad), b = std::min<int64_t>(n, j + pad + 1);
    if (kind == PoolKind::Max) {
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t t = a; t < b; ++t) m = std::max(m, in[t]);  // NaN-free inputs; -inf padding never wins
      out[j] = m;
    } else {
      float s = 0.0f;
      for (int64_t t = a; t < b; ++t) s += in[t];
      out[j] = s / static_cast<float>(kernel);
    }
  }
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

void select_row(const float* scores, int64_t n, const std::vector<int64_t>& window, int64_t capacity, PoolKind pool,
                int kernel, RowSelection& out) {
  out.pooled.resize(static_cast<size_t>(n));
  pool1d(scores, n, kernel, pool, out.pooled.data());
  std::vector<float> masked(out.pooled);
  for (int64_t p : window) {
    SKV_CHECK(p >= 0 && p < n, "observation window position {} outside [0, {})", p, n);
    masked[p] = -std::numeric_limits<float>::infinity();
  }
  const int64_t nw = static_cast<int64_t>(window.size());
  const int64_t keep = std::max<int64_t>(0, std::min(capacity - nw, n - nw));
  topk_lower_index(masked.data(), n, keep, out.topk);
  out.kept = out.topk;
  out.kept.insert(out.kept.end(), window.begin(), window.end());
  std::sort(out.kept.begin(), out.kept.end());
}

}  // namespace skv
