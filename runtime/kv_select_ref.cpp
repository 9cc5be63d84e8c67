// kv_select_ref.cpp - host reference of window scoring, 1-D pooling and top-k-keep (kv_select_ref.h).
// Written for clarity, not speed: the CUDA kernels are checked against it, and it against the goldens.
#include "runtime/kv_select_ref.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "runtime/check.h"

namespace skv {

std::vector<int32_t> scalekv_window(int64_t h, int64_t w) {
  SKV_CHECK(h >= 1 && w >= 1, "scalekv_window: map {}x{} is empty", h, w);
  std::vector<int32_t> out;
  if (h == w && h >= 4) {
    const int64_t patch = h / 4;
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        const int64_t y = i * patch + (patch - 1) / 2, x = j * patch + (patch - 1) / 2;
        out.push_back(static_cast<int32_t>(y * w + x));
      }
    return out;  // y-major with increasing x: already ascending
  }
  const int64_t l = h * w, n = std::min<int64_t>(kScaleKVWindow, l);
  for (int64_t i = l - n; i < l; ++i) out.push_back(static_cast<int32_t>(i));
  return out;
}

namespace {

void check_host_f32(const Tensor& t, const char* what) {
  SKV_CHECK(t.defined() && t.device() == Device::CPU && t.dtype() == DType::F32 && t.ndim() == 4,
            "{}: expected a host F32 [R, H, L, D] tensor, got {}", what, t.defined() ? t.describe() : "undefined");
}

}  // namespace

void window_scores_ref(const Tensor& q, const std::vector<int32_t>& win, const Tensor& hist_k, int64_t hist_len,
                       const Tensor& cur_k, float scale, WindowScore mode, Tensor& scores) {
  check_host_f32(q, "window_scores q");
  check_host_f32(cur_k, "window_scores cur_k");
  const int64_t R = q.dim(0), H = q.dim(1), Lc = q.dim(2), D = q.dim(3);
  const int64_t cap = hist_len > 0 ? hist_k.dim(2) : 0, total = hist_len + Lc;
  if (hist_len > 0) check_host_f32(hist_k, "window_scores hist_k");
  SKV_CHECK(cur_k.dim(2) == Lc && scores.numel() == R * H * total && hist_len <= cap,
            "window_scores: q {} cur_k {} scores {} hist_len {}", q.describe(), cur_k.describe(), scores.describe(),
            hist_len);
  for (int32_t w : win) SKV_CHECK(w >= 0 && w < Lc, "window_scores: window query {} outside [0, {})", w, Lc);
  const int64_t nw = static_cast<int64_t>(win.size());
  auto key = [&](int64_t rh, int64_t c) {
    return c < hist_len ? hist_k.f32() + (rh * cap + c) * D : cur_k.f32() + (rh * Lc + (c - hist_len)) * D;
  };
  auto is_win = [&](int64_t c) {
    return c >= hist_len && std::find(win.begin(), win.end(), static_cast<int32_t>(c - hist_len)) != win.end();
  };
  auto logit = [&](const float* qv, const float* kv) {
    float dot = 0.0f;
    for (int64_t d = 0; d < D; ++d) dot += qv[d] * kv[d];
    return scale * dot;
  };
  for (int64_t rh = 0; rh < R * H; ++rh) {
    float* out = scores.f32() + rh * total;
    if (mode == WindowScore::Raw) {
      for (int64_t c = 0; c < total; ++c) {
        if (is_win(c)) {
          out[c] = -std::numeric_limits<float>::infinity();
          continue;
        }
        float s = 0.0f;
        for (int64_t i = 0; i < nw; ++i) s += logit(q.f32() + (rh * Lc + win[i]) * D, key(rh, c));
        out[c] = s;
      }
    } else {
      std::fill(out, out + total, 0.0f);
      for (int64_t i = 0; i < nw; ++i) {
        const float* qv = q.f32() + (rh * Lc + win[i]) * D;
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t c = 0; c < total; ++c)
          if (!is_win(c)) m = std::max(m, logit(qv, key(rh, c)));
        double z = 0;
        for (int64_t c = 0; c < total; ++c)
          if (!is_win(c)) z += std::exp(static_cast<double>(logit(qv, key(rh, c)) - m));
        for (int64_t c = 0; c < total; ++c)
          if (!is_win(c)) out[c] += static_cast<float>(std::exp(static_cast<double>(logit(qv, key(rh, c)) - m)) / z);
      }
    }
  }
}

void pool1d_ref(const Tensor& in, int kernel, WindowPool mode, Tensor& out) {
  SKV_CHECK(in.device() == Device::CPU && in.dtype() == DType::F32 && out.numel() == in.numel() && kernel >= 1 &&
                kernel % 2 == 1,
            "pool1d: in {} out {} kernel {} (odd)", in.describe(), out.describe(), kernel);
  const int64_t n = in.dim(-1), rows = n == 0 ? 0 : in.numel() / n, half = kernel / 2;
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = in.f32() + r * n;
    float* o = out.f32() + r * n;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t a = std::max<int64_t>(0, i - half), b = std::min<int64_t>(n - 1, i + half);
      if (mode == WindowPool::Max) {
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t j = a; j <= b; ++j) m = std::max(m, s[j]);
        o[i] = m;
      } else {
        float sum = 0.0f;
        for (int64_t j = a; j <= b; ++j) sum += s[j];
        o[i] = sum / static_cast<float>(kernel);
      }
    }
  }
}

void topk_keep_ref(const Tensor& pooled, const std::vector<int32_t>& win_cols, int64_t k, Tensor& kept) {
  SKV_CHECK(pooled.device() == Device::CPU && pooled.dtype() == DType::F32 && pooled.ndim() == 3,
            "topk_keep: pooled must be a host F32 [R, H, n] tensor, got {}", pooled.describe());
  const int64_t RH = pooled.dim(0) * pooled.dim(1), n = pooled.dim(2), nw = static_cast<int64_t>(win_cols.size());
  SKV_CHECK(std::is_sorted(win_cols.begin(), win_cols.end()) && (nw == 0 || (win_cols.front() >= 0 && win_cols.back() < n)),
            "topk_keep: window columns must be ascending in [0, {})", n);
  SKV_CHECK(k >= 0 && k <= n - nw, "topk_keep: k = {} but only {} candidate columns", k, n - nw);
  SKV_CHECK(kept.dtype() == DType::I32 && kept.numel() == RH * (k + nw), "topk_keep: kept {} for {} x {}",
            kept.describe(), RH, k + nw);
  std::vector<char> is_win(static_cast<size_t>(n), 0);
  for (int32_t c : win_cols) is_win[c] = 1;
  std::vector<int32_t> order;
  for (int64_t rh = 0; rh < RH; ++rh) {
    const float* s = pooled.f32() + rh * n;
    order.clear();
    for (int64_t c = 0; c < n; ++c)
      if (!is_win[c]) order.push_back(static_cast<int32_t>(c));
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return s[a] > s[b]; });
    order.resize(static_cast<size_t>(k));
    order.insert(order.end(), win_cols.begin(), win_cols.end());
    std::sort(order.begin(), order.end());
    std::copy(order.begin(), order.end(), kept.data<int32_t>() + rh * (k + nw));
  }
}

}  // namespace skv
