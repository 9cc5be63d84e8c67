// backend_cpu.cpp - the reference backend: oneDNN for linear layers and convolutions (runtime/cpu/onednn.h
// says why), OpenBLAS for attention's small per-tile products, OpenMP loops for the rest. Every op follows
// PyTorch's float32 CPU definition (interpolation index/weight rules, biased variance in the norms,
// GELU-tanh), because the goldens were produced by PyTorch on a CPU. Attention works in query chunks so
// the score matrix never exceeds kAttnChunk x keys floats.
// Threads: ONE pool. OpenBLAS is set to one thread and called once per OpenMP tile; oneDNN runs on the
// same OpenMP runtime. With OpenBLAS's own pthreads next to the OpenMP workers, each pool spun while the
// other worked and a 2-core run of Infinity took twice as long.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

#include "runtime/backend.h"
#include "runtime/check.h"
#include "runtime/cpu/onednn.h"
#include "runtime/cuda/kernel_math.h"  // host-compatible: the CUDA kernels' limits, checked in debug builds
#include "runtime/hostdevice.h"

namespace skv {

const char* interp_name(Interp m) {
  switch (m) {
    case Interp::Nearest: return "nearest";
    case Interp::Bilinear: return "bilinear";
    case Interp::Bicubic: return "bicubic";
    case Interp::Area: return "area";
    case Interp::Trilinear: return "trilinear";
  }
  return "?";
}

Tensor Backend::empty(const Shape& shape, DType dt, MemCategory cat) {
  return Tensor::empty(shape, dt, cat, &allocator(), device());
}

void Backend::set_weight_dtype(DType dt) {
  SKV_CHECK(dt == DType::F32 || dt == DType::F16 || dt == DType::BF16, "weight dtype {} unsupported (use f32, f16 or bf16)",
            dtype_name(dt));
  weight_dtype_ = dt;
}

bool Backend::compute_dtype_supported(DType dt, std::string* why) const {
  if (dt == DType::F32 || dt == DType::BF16) return true;
  if (why) *why = fmt::format("a {} compute path (use f32 or bf16)", dtype_name(dt));
  return false;
}

void Backend::set_compute_dtype(DType dt) {
  std::string missing;
  SKV_CHECK(compute_dtype_supported(dt, &missing), "compute dtype {} on the {} backend needs {}; use --compute-dtype f32",
            dtype_name(dt), name(), missing);
  compute_dtype_ = dt;
  if (dt == DType::BF16) set_weight_dtype(DType::BF16);
}

Tensor Backend::zeros(const Shape& shape, DType dt, MemCategory cat) {
  Tensor t = empty(shape, dt, cat);
  fill(t, 0.0f);
  return t;
}

ExtentLayout check_gather_extents(const std::vector<KVExtent>& store, int64_t hist_len, const Tensor& cur,
                                  const Tensor& kept, int64_t first, int64_t n) {
  ExtentLayout x;
  SKV_CHECK(!store.empty() || n == 0, "gather_extents: {} tokens into a store without extents", n);
  const Tensor* t0 = store.empty() ? nullptr : store[0].t;
  for (const KVExtent& e : store) {
    const Tensor* t = e.t;
    SKV_CHECK(t && t->defined() && t->ndim() == 4 && t->dim(0) == t0->dim(0) && t->dim(1) == t0->dim(1) &&
                  t->dim(3) == t0->dim(3) && t->dtype() == t0->dtype() && t->device() == t0->device(),
              "gather_extents: extent {} beside {}", t && t->defined() ? t->describe() : "undefined", t0->describe());
    SKV_CHECK(e.start >= 0 && e.len >= 0 && e.start + e.len <= t->dim(2), "gather_extents: tokens [{}, {}) of {}",
              e.start, e.start + e.len, t->describe());
    x.first.push_back(x.capacity);
    x.capacity += e.len;
  }
  if (t0) {
    x.rows = t0->dim(0);
    x.heads = t0->dim(1);
    x.head_dim = t0->dim(3);
  }
  const int64_t RH = x.rows * x.heads;
  x.shared_kept = kept.numel() == n;
  SKV_CHECK(kept.dtype() == DType::I32 && (x.shared_kept || kept.numel() == RH * n) && 0 <= first && first <= n &&
                n <= x.capacity && 0 <= hist_len && hist_len <= x.capacity,
            "gather_extents: kept {} for tokens [{}, {}) of a store of {} (history {})", kept.describe(), first, n,
            x.capacity, hist_len);
  x.cur_len = cur.defined() ? cur.dim(2) : 0;
  SKV_CHECK(!cur.defined() || (t0 && cur.ndim() == 4 && cur.dim(0) == x.rows && cur.dim(1) == x.heads &&
                               cur.dim(3) == x.head_dim && cur.dtype() == t0->dtype()),
            "gather_extents: current {} for the store's extents", cur.describe());
  return x;
}
void Backend::window_scores(const Tensor&, const std::vector<int64_t>&, const std::vector<KVSegment>&, float, ScoreMode,
                            Tensor&) {
  SKV_FAIL("window_scores is not implemented on the {} backend", name());
}
void Backend::attention_mass(const Tensor&, const std::vector<int64_t>&, const std::vector<KVSegment>&, int64_t, float,
                             int64_t, Tensor&) {
  SKV_FAIL("attention_mass is not implemented on the {} backend", name());
}
void Backend::select_kept(const Tensor&, const KeepSpec&, Tensor&) {
  SKV_FAIL("select_kept is not implemented on the {} backend (the CPU runs kvcache/selection.cpp)", name());
}

namespace {

constexpr int64_t kAttnChunk = 256;

void check_f32(const Tensor& t, const char* what) {
  SKV_CHECK(t.defined() && t.dtype() == DType::F32 && t.device() == Device::CPU, "{}: expected a host F32 tensor, got {}",
            what, t.defined() ? t.describe() : "undefined");
}

// Interpolation taps per axis, tabulated once per call (hostdevice.h computes them, shared with CUDA).
std::vector<LinearTap> linear_taps(int64_t in, int64_t out) {
  std::vector<LinearTap> taps(out);
  for (int64_t o = 0; o < out; ++o) taps[o] = linear_tap(in, out, o);
  return taps;
}

std::vector<CubicTap> cubic_taps(int64_t in, int64_t out) {
  std::vector<CubicTap> taps(out);
  for (int64_t o = 0; o < out; ++o) taps[o] = cubic_tap(in, out, o);
  return taps;
}

class CpuBackend final : public Backend {
 public:
  CpuBackend() { openblas_set_num_threads(1); }  // one thread pool: see the file comment
  Device device() const override { return Device::CPU; }
  std::string name() const override { return "cpu"; }
  Allocator& allocator() override { return Allocator::host(); }

  Tensor upload(const Tensor& host, MemCategory cat) override { return host.clone(cat); }
  Tensor download(const Tensor& t) override { return t.clone(); }
  void copy(const Tensor& src, Tensor& dst) override {
    SKV_CHECK(src.nbytes() == dst.nbytes(), "copy: {} -> {} sizes differ", src.describe(), dst.describe());
    std::memcpy(dst.raw(), src.raw(), src.nbytes());
  }
  void fill(Tensor& t, float v) override {
    if (t.dtype() == DType::F32) {
      t.fill(v);
    } else {
      SKV_CHECK(v == 0.0f, "fill: only zero fill for {}", t.describe());
      std::memset(t.raw(), 0, t.nbytes());
    }
  }

  bool compute_dtype_supported(DType dt, std::string* why) const override {
    if (!Backend::compute_dtype_supported(dt, why)) return false;
    return onednn::native(dt, why);
  }

  // oneDNN's matmul (runtime/cpu/onednn.h): F32 weights in F32; BF16 weights with the inputs rounded to
  // bf16 where the CPU has bf16 instructions (the contract of CUDA's tensor-core path), else the
  // weights widened to F32 per call; F16 weights widened per call.
  void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) override {
    check_f32(x, "linear x");
    check_f32(y, "linear y");
    SKV_CHECK(w.ndim() == 2, "linear: weight must be 2-D, got {}", w.describe());
    const int64_t K = w.dim(1), N = w.dim(0);
    SKV_CHECK(x.dim(-1) == K && y.dim(-1) == N && x.numel() / K == y.numel() / N, "linear: x {} w {} y {}",
              x.describe(), w.describe(), y.describe());
    const int64_t M = x.numel() / K;
    if (bias) {
      check_f32(*bias, "linear bias");
      SKV_CHECK(bias->numel() == N, "linear: bias {} for N={}", bias->describe(), N);
    }
    if (M == 0 || N == 0) return;
    float* yp = y.f32();
    if (K == 0) {
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) yp[m * N + n] = bias ? bias->f32()[n] : 0.0f;
      return;
    }
    const float* bp = bias ? bias->f32() : nullptr;
    if (w.dtype() == DType::BF16 && bf16_native()) {
      Tensor xb = Tensor::empty({M, K}, DType::BF16, MemCategory::Workspace);
      onednn::to_bf16(x.f32(), xb.data<uint16_t>(), M * K);
      onednn::matmul(DType::BF16, M, N, K, xb.raw(), w.raw(), bp, yp);
      return;
    }
    Tensor w32 = w.dtype() == DType::F32 ? w : w.to_f32(MemCategory::Workspace);
    onednn::matmul(DType::F32, M, N, K, x.f32(), w32.f32(), bp, yp);
  }

  void layer_norm(const Tensor& x, const Tensor* w, const Tensor* b, float eps, Tensor& y) override {
    check_f32(x, "layer_norm x");
    const int64_t C = x.dim(-1), M = x.numel() / C;
    const float* xp = x.f32();
    float* yp = y.f32();
    const float* wp = w ? w->f32() : nullptr;
    const float* bp = b ? b->f32() : nullptr;
#pragma omp parallel for if (M * C > 65536)
    for (int64_t m = 0; m < M; ++m) {
      const float* r = xp + m * C;
      double mean = 0, var = 0;
      for (int64_t c = 0; c < C; ++c) mean += r[c];
      mean /= static_cast<double>(C);
      for (int64_t c = 0; c < C; ++c) var += (r[c] - mean) * (r[c] - mean);
      var /= static_cast<double>(C);
      const float rstd = static_cast<float>(1.0 / std::sqrt(var + eps));
      const float mu = static_cast<float>(mean);
      float* o = yp + m * C;
      for (int64_t c = 0; c < C; ++c) {
        float v = (r[c] - mu) * rstd;
        if (wp) v *= wp[c];
        if (bp) v += bp[c];
        o[c] = v;
      }
    }
  }

  void rms_norm(const Tensor& x, const Tensor* w, float eps, Tensor& y) override {
    check_f32(x, "rms_norm x");
    const int64_t C = x.dim(-1), M = x.numel() / C;
    const float* xp = x.f32();
    float* yp = y.f32();
    const float* wp = w ? w->f32() : nullptr;
#pragma omp parallel for if (M * C > 65536)
    for (int64_t m = 0; m < M; ++m) {
      const float* r = xp + m * C;
      double ss = 0;
      for (int64_t c = 0; c < C; ++c) ss += static_cast<double>(r[c]) * r[c];
      const float rs = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(C) + eps));
      float* o = yp + m * C;
      for (int64_t c = 0; c < C; ++c) o[c] = r[c] * rs * (wp ? wp[c] : 1.0f);
    }
  }

  void modulate(const Tensor& x, const Tensor& scale, const Tensor& shift, Tensor& y) override {
    check_f32(x, "modulate x");
    const int64_t R = x.dim(0), C = x.dim(-1), T = x.numel() / (R * C);
    SKV_CHECK(scale.numel() == R * C && shift.numel() == R * C, "modulate: x {} scale {} shift {}", x.describe(),
              scale.describe(), shift.describe());
    const float *xp = x.f32(), *sc = scale.f32(), *sh = shift.f32();
    float* yp = y.f32();
#pragma omp parallel for collapse(2) if (R * T * C > 65536)
    for (int64_t r = 0; r < R; ++r)
      for (int64_t t = 0; t < T; ++t) {
        const float* a = xp + (r * T + t) * C;
        float* o = yp + (r * T + t) * C;
        for (int64_t c = 0; c < C; ++c) o[c] = a[c] * (sc[r * C + c] + 1.0f) + sh[r * C + c];
      }
  }

  void add_gated(Tensor& x, const Tensor& y, const Tensor* gate) override {
    check_f32(x, "add_gated x");
    SKV_CHECK(x.numel() == y.numel(), "add_gated: x {} y {}", x.describe(), y.describe());
    const int64_t R = x.dim(0), C = x.dim(-1), T = x.numel() / (R * C);
    float* xp = x.f32();
    const float* yp = y.f32();
    const float* g = gate ? gate->f32() : nullptr;
    if (gate) SKV_CHECK(gate->numel() == R * C, "add_gated: gate {} for x {}", gate->describe(), x.describe());
#pragma omp parallel for collapse(2) if (R * T * C > 65536)
    for (int64_t r = 0; r < R; ++r)
      for (int64_t t = 0; t < T; ++t) {
        float* a = xp + (r * T + t) * C;
        const float* b = yp + (r * T + t) * C;
        if (g)
          for (int64_t c = 0; c < C; ++c) a[c] += b[c] * g[r * C + c];
        else
          for (int64_t c = 0; c < C; ++c) a[c] += b[c];
      }
  }

  void add(const Tensor& a, const Tensor& b, Tensor& y) override {
    check_f32(a, "add a");
    const int64_t n = a.numel(), m = b.numel();
    SKV_CHECK(m > 0 && n % m == 0 && y.numel() == n, "add: a {} b {} y {}", a.describe(), b.describe(), y.describe());
    const float *ap = a.f32(), *bp = b.f32();
    float* yp = y.f32();
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) yp[i] = ap[i] + bp[i % m];
  }

  void scale(Tensor& x, float s) override {
    float* p = x.f32();
    const int64_t n = x.numel();
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) p[i] *= s;
  }

  void axpby(const Tensor& x, float a, const Tensor& y, float b, Tensor& out) override {
    SKV_CHECK(x.numel() == y.numel() && out.numel() == x.numel(), "axpby: x {} y {} out {}", x.describe(),
              y.describe(), out.describe());
    const float *xp = x.f32(), *yp = y.f32();
    float* o = out.f32();
    const int64_t n = x.numel();
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) o[i] = xp[i] * a + yp[i] * b;
  }

  void transpose_last2(const Tensor& x, Tensor& y) override {
    const int64_t M = x.dim(-2), N = x.dim(-1), B = x.numel() / (M * N);
    SKV_CHECK(y.numel() == x.numel() && y.dim(-1) == M, "transpose_last2: x {} y {}", x.describe(), y.describe());
    const float* xp = x.f32();
    float* yp = y.f32();
#pragma omp parallel for collapse(2) if (B * M * N > 65536)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t n = 0; n < N; ++n)
        for (int64_t m = 0; m < M; ++m) yp[(b * N + n) * M + m] = xp[(b * M + m) * N + n];
  }

  void copy_tokens(const Tensor& src, int64_t n, Tensor& dst, int64_t dst_off) override {
    const int64_t RH = src.dim(0) * src.dim(1), Ls = src.dim(2), D = src.dim(3), cap = dst.dim(2);
    SKV_CHECK(dst.dim(0) * dst.dim(1) == RH && dst.dim(3) == D && n <= Ls && dst_off + n <= cap,
              "copy_tokens: {} tokens of {} into {} at {}", n, src.describe(), dst.describe(), dst_off);
    SKV_CHECK(src.dtype() == dst.dtype(), "copy_tokens: dtype {} -> {}", dtype_name(src.dtype()), dtype_name(dst.dtype()));
    const size_t es = dtype_size(src.dtype());
    const char* s = static_cast<const char*>(src.raw());
    char* d = static_cast<char*>(dst.raw());
    for (int64_t rh = 0; rh < RH; ++rh)
      std::memcpy(d + ((rh * cap + dst_off) * D) * es, s + (rh * Ls * D) * es, static_cast<size_t>(n * D) * es);
  }

  void gather_tokens(Tensor& store, int64_t hist_len, const Tensor& cur, const Tensor& kept, int64_t n) override {
    const int64_t RH = store.dim(0) * store.dim(1), cap = store.dim(2), D = store.dim(3), Lc = cur.dim(2);
    SKV_CHECK(kept.numel() == RH * n && n <= cap && kept.dtype() == DType::I32, "gather_tokens: kept {} n {} store {}",
              kept.describe(), n, store.describe());
    const size_t es = dtype_size(store.dtype());
    char* st = static_cast<char*>(store.raw());
    const char* cu = static_cast<const char*>(cur.raw());
    const int32_t* kp = kept.data<int32_t>();
#pragma omp parallel for if (RH * n * D > 65536)
    for (int64_t rh = 0; rh < RH; ++rh)
      for (int64_t j = 0; j < n; ++j) {
        const int64_t i = kp[rh * n + j];
        char* dst = st + ((rh * cap + j) * D) * es;
        if (i < hist_len) {
          if (i != j) std::memcpy(dst, st + ((rh * cap + i) * D) * es, static_cast<size_t>(D) * es);
        } else {
          std::memcpy(dst, cu + ((rh * Lc + (i - hist_len)) * D) * es, static_cast<size_t>(D) * es);
        }
      }
  }

  void gather_extents(const std::vector<KVExtent>& store, int64_t hist_len, const Tensor& cur, const Tensor& kept,
                      int64_t first, int64_t n) override {
    const ExtentLayout x = check_gather_extents(store, hist_len, cur, kept, first, n);
    const int64_t RH = x.rows * x.heads, Lc = x.cur_len, D = x.head_dim;
    if (first >= n || RH == 0) return;
    const int32_t* kp = kept.data<int32_t>();
    const int64_t limit = hist_len + Lc;
    for (int64_t rh = 0; rh < (x.shared_kept ? 1 : RH); ++rh)
      for (int64_t j = first; j < n; ++j) {
        const int64_t i = kp[(x.shared_kept ? 0 : rh * n) + j];
        SKV_CHECK(i >= j && i < limit && (j == first || i > kp[(x.shared_kept ? 0 : rh * n) + j - 1]),
                  "gather_extents: kept index {} for token {} (ascending, >= the token, below {})", i, j, limit);
      }
    const size_t es = dtype_size(store[0].t->dtype()), row = static_cast<size_t>(D) * es;
    // The extent of token t and the address of (rh, t) in its tensor.
    auto at = [&](int64_t rh, int64_t t) {
      const size_t e = static_cast<size_t>(std::upper_bound(x.first.begin(), x.first.end(), t) - x.first.begin()) - 1;
      const KVExtent& ext = store[e];
      return static_cast<char*>(ext.t->raw()) + (rh * ext.t->dim(2) + ext.start + (t - x.first[e])) * row;
    };
    const char* cp = cur.defined() ? static_cast<const char*>(cur.raw()) : nullptr;
#pragma omp parallel for if (RH * (n - first) * D > 65536)
    for (int64_t rh = 0; rh < RH; ++rh) {
      const int32_t* k = x.shared_kept ? kp : kp + rh * n;
      for (int64_t j = first; j < n; ++j) {
        const int64_t i = k[j];
        char* dst = at(rh, j);
        const char* src = i < hist_len ? at(rh, i) : cp + (rh * Lc + (i - hist_len)) * row;
        if (dst != src) std::memcpy(dst, src, row);
      }
    }
  }

  // Logits of the listed queries against every key of segs: S [nq, Ltot] for one (r, h).
  static int64_t query_logits(const Tensor& q, const std::vector<int64_t>& q_idx, const std::vector<KVSegment>& segs,
                              float scale, int64_t r, int64_t h, float* Qw, float* S, int64_t ld) {
    const int64_t H = q.dim(1), Lq = q.dim(2), D = q.dim(3), nq = static_cast<int64_t>(q_idx.size());
    for (int64_t i = 0; i < nq; ++i)
      std::memcpy(Qw + i * D, q.f32() + ((r * H + h) * Lq + q_idx[i]) * D, D * sizeof(float));
    int64_t col = 0;
    for (const auto& s : segs) {
      if (s.len == 0) continue;
      const float* K = s.k->f32() + ((r * H + h) * s.k->dim(2) + s.start) * D;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, s.len, D, scale, Qw, D, K, D, 0.0f, S + col, ld);
      col += s.len;
    }
    return col;
  }

  static int64_t check_score_inputs(const Tensor& q, const std::vector<int64_t>& q_idx, const std::vector<KVSegment>& segs,
                                    const char* what) {
    check_f32(q, what);
    const int64_t R = q.dim(0), H = q.dim(1), Lq = q.dim(2), D = q.dim(3);
    SKV_CHECK(!q_idx.empty(), "{}: no queries", what);
    for (int64_t i : q_idx) SKV_CHECK(i >= 0 && i < Lq, "{}: query {} outside [0, {})", what, i, Lq);
    int64_t L = 0;
    for (const auto& s : segs) {
      SKV_CHECK(s.k->dim(0) == R && s.k->dim(1) == H && s.k->dim(3) == D && s.row_len.empty() &&
                    s.start + s.len <= s.k->dim(2),
                "{}: segment {} [{}, +{}) for q {}", what, s.k->describe(), s.start, s.len, q.describe());
      L += s.len;
    }
    return L;
  }

  void window_scores(const Tensor& q, const std::vector<int64_t>& q_idx, const std::vector<KVSegment>& segs, float scale,
                     ScoreMode mode, Tensor& out) override {
    const int64_t L = check_score_inputs(q, q_idx, segs, "window_scores");
    const int64_t R = q.dim(0), H = q.dim(1), D = q.dim(3), nq = static_cast<int64_t>(q_idx.size());
    SKV_CHECK(out.numel() == R * H * L, "window_scores: out {} for {} keys", out.describe(), L);
    Tensor Qw = Tensor::empty({nq, D}, DType::F32, MemCategory::Workspace);
    Tensor S = Tensor::empty({nq, std::max<int64_t>(L, 1)}, DType::F32, MemCategory::Workspace);
    float* sp = S.f32();
    for (int64_t r = 0; r < R; ++r)
      for (int64_t h = 0; h < H; ++h) {
        query_logits(q, q_idx, segs, scale, r, h, Qw.f32(), sp, L);
        float* o = out.f32() + (r * H + h) * L;
        if (mode == ScoreMode::SoftmaxMean) {
          for (int64_t i = 0; i < nq; ++i) softmax_row(sp + i * L, L);
        }
        for (int64_t j = 0; j < L; ++j) {
          float acc = 0.0f;
          for (int64_t i = 0; i < nq; ++i) acc += sp[i * L + j];
          o[j] = mode == ScoreMode::SoftmaxMean ? acc / static_cast<float>(nq) : acc;
        }
      }
  }

  void attention_mass(const Tensor& q, const std::vector<int64_t>& q_idx, const std::vector<KVSegment>& segs,
                      int64_t n_hist, float scale, int64_t topk, Tensor& out) override {
    const int64_t L = check_score_inputs(q, q_idx, segs, "attention_mass");
    const int64_t R = q.dim(0), H = q.dim(1), D = q.dim(3), nq = static_cast<int64_t>(q_idx.size());
    SKV_CHECK(n_hist >= 0 && n_hist <= L && topk >= 0 && out.numel() == R * H * 2,
              "attention_mass: n_hist {} of {} keys, topk {}, out {}", n_hist, L, topk, out.describe());
    Tensor Qw = Tensor::empty({nq, D}, DType::F32, MemCategory::Workspace);
    Tensor S = Tensor::empty({nq, std::max<int64_t>(L, 1)}, DType::F32, MemCategory::Workspace);
    float* sp = S.f32();
    const int64_t k = std::min(topk, n_hist);
    std::vector<float> hist(static_cast<size_t>(n_hist));
    for (int64_t r = 0; r < R; ++r)
      for (int64_t h = 0; h < H; ++h) {
        query_logits(q, q_idx, segs, scale, r, h, Qw.f32(), sp, L);
        double cur_sum = 0, top_sum = 0;
        for (int64_t i = 0; i < nq; ++i) {
          float* row = sp + i * L;
          softmax_row(row, L);
          double c = 0;
          for (int64_t j = n_hist; j < L; ++j) c += row[j];
          cur_sum += c;
          if (k > 0) {
            std::copy(row, row + n_hist, hist.begin());
            std::nth_element(hist.begin(), hist.begin() + (k - 1), hist.end(), std::greater<float>());
            double t = 0;
            for (int64_t j = 0; j < k; ++j) t += hist[j];
            top_sum += t;
          }
        }
        out.f32()[(r * H + h) * 2] = static_cast<float>(cur_sum / nq);
        out.f32()[(r * H + h) * 2 + 1] = static_cast<float>(top_sum / nq);
      }
  }

  void gelu_tanh(Tensor& x) override {
    float* p = x.f32();
    const int64_t n = x.numel();
#pragma omp parallel for if (n > 16384)
    for (int64_t i = 0; i < n; ++i) p[i] = skv::gelu_tanh(p[i]);
  }

  void silu(const Tensor& x, Tensor& y) override {
    const float* p = x.f32();
    float* o = y.f32();
    const int64_t n = x.numel();
#pragma omp parallel for if (n > 16384)
    for (int64_t i = 0; i < n; ++i) o[i] = skv::silu(p[i]);
  }

  void softmax_lastdim(Tensor& x) override {
    const int64_t C = x.dim(-1), M = x.numel() / C;
    float* p = x.f32();
#pragma omp parallel for if (M * C > 16384)
    for (int64_t m = 0; m < M; ++m) softmax_row(p + m * C, C);
  }

  void embedding(const Tensor& table, const std::vector<int64_t>& idx, Tensor& y) override {
    check_f32(table, "embedding table");
    const int64_t V = table.dim(0), C = table.dim(1);
    SKV_CHECK(y.numel() == static_cast<int64_t>(idx.size()) * C, "embedding: y {} for {} ids", y.describe(), idx.size());
    for (size_t i = 0; i < idx.size(); ++i) {
      SKV_CHECK(idx[i] >= 0 && idx[i] < V, "embedding: index {} outside [0, {})", idx[i], V);
      std::memcpy(y.f32() + i * C, table.f32() + idx[i] * C, C * sizeof(float));
    }
  }

  void split_qkv(const Tensor& qkv, const Tensor* qb, const Tensor* kb, const Tensor* vb, Tensor& q, Tensor& k,
                 Tensor& v) override {
    const int64_t R = q.dim(0), H = q.dim(1), L = q.dim(2), D = q.dim(3);
    SKV_CHECK(qkv.numel() == 3 * R * H * L * D && k.numel() == q.numel() && v.numel() == q.numel(),
              "split_qkv: qkv {} q {}", qkv.describe(), q.describe());
    const float* src = qkv.f32();
    Tensor* outs[3] = {&q, &k, &v};
    const Tensor* biases[3] = {qb, kb, vb};
#pragma omp parallel for collapse(2) if (R * L * H * D > 65536)
    for (int64_t r = 0; r < R; ++r)
      for (int64_t l = 0; l < L; ++l)
        for (int s = 0; s < 3; ++s) {
          const float* row = src + ((r * L + l) * 3 + s) * H * D;
          const float* b = biases[s] ? biases[s]->f32() : nullptr;
          float* o = outs[s]->f32();
          for (int64_t h = 0; h < H; ++h)
            for (int64_t d = 0; d < D; ++d)
              o[((r * H + h) * L + l) * D + d] = row[h * D + d] + (b ? b[h * D + d] : 0.0f);
        }
  }

  void to_heads(const Tensor& x, const Tensor* bias, Tensor& y) override {
    const int64_t R = y.dim(0), H = y.dim(1), L = y.dim(2), D = y.dim(3);
    SKV_CHECK(x.numel() == y.numel(), "to_heads: x {} y {}", x.describe(), y.describe());
    const float* src = x.f32();
    const float* b = bias ? bias->f32() : nullptr;
    float* o = y.f32();
#pragma omp parallel for collapse(2) if (R * L * H * D > 65536)
    for (int64_t r = 0; r < R; ++r)
      for (int64_t l = 0; l < L; ++l)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t d = 0; d < D; ++d)
            o[((r * H + h) * L + l) * D + d] = src[(r * L + l) * H * D + h * D + d] + (b ? b[h * D + d] : 0.0f);
  }

  void from_heads(const Tensor& x, Tensor& y) override {
    const int64_t R = x.dim(0), H = x.dim(1), L = x.dim(2), D = x.dim(3);
    SKV_CHECK(x.numel() == y.numel(), "from_heads: x {} y {}", x.describe(), y.describe());
    const float* src = x.f32();
    float* o = y.f32();
#pragma omp parallel for collapse(2) if (R * L * H * D > 65536)
    for (int64_t r = 0; r < R; ++r)
      for (int64_t l = 0; l < L; ++l)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t d = 0; d < D; ++d)
            o[(r * L + l) * H * D + h * D + d] = src[((r * H + h) * L + l) * D + d];
  }

  void l2norm_heads(Tensor& x, const Tensor* head_scale) override {
    const int64_t R = x.dim(0), H = x.dim(1), L = x.dim(2), D = x.dim(3);
    float* p = x.f32();
    const float* hs = head_scale ? head_scale->f32() : nullptr;
#pragma omp parallel for collapse(2) if (R * H * L * D > 65536)
    for (int64_t rh = 0; rh < R * H; ++rh)
      for (int64_t l = 0; l < L; ++l) {
        float* v = p + (rh * L + l) * D;
        float ss = 0.0f;
        for (int64_t d = 0; d < D; ++d) ss += v[d] * v[d];
        const float inv = 1.0f / std::max(std::sqrt(ss), 1e-12f);
        const float s = hs ? hs[rh % H] : 1.0f;
        for (int64_t d = 0; d < D; ++d) v[d] = v[d] * inv * s;
      }
  }

  void rope(Tensor& x, const Tensor& cos_sin, const std::vector<int64_t>& pos) override {
    const int64_t R = x.dim(0), H = x.dim(1), L = x.dim(2), D = x.dim(3);
    const int64_t P = cos_sin.dim(1), half = cos_sin.dim(2);
    SKV_CHECK(half * 2 == D && static_cast<int64_t>(pos.size()) == L, "rope: x {} table {} positions {}",
              x.describe(), cos_sin.describe(), pos.size());
    const float* cs = cos_sin.f32();
    float* p = x.f32();
    for (int64_t t : pos) SKV_CHECK(t >= 0 && t < P, "rope: position {} outside the table ({})", t, P);
#pragma omp parallel for collapse(2) if (R * H * L * D > 65536)
    for (int64_t rh = 0; rh < R * H; ++rh)
      for (int64_t l = 0; l < L; ++l) {
        float* v = p + (rh * L + l) * D;
        const float* c = cs + pos[l] * half;
        const float* s = cs + (P + pos[l]) * half;
        for (int64_t i = 0; i < half; ++i) {
          const float a = v[2 * i], b = v[2 * i + 1];
          v[2 * i] = a * c[i] - b * s[i];
          v[2 * i + 1] = b * c[i] + a * s[i];
        }
      }
  }

  void attention(const Tensor& q, const std::vector<KVSegment>& segs, float scale, Tensor& out) override {
    attention_varlen({{&q, segs, &out}}, scale);
  }

  // One tile = (job, row, head, query chunk); the tiles of every job run in one parallel loop, each with
  // its own score buffer, so a step of many small requests keeps every core busy.
  void attention_varlen(const std::vector<AttentionJob>& jobs, float scale) override {
    struct Job {
      int64_t R, H, Lq, D, Lmax, chunk, nchunks, tile0;
      bool gather;  // its keys lie in more than one segment: copied into one block per tile (below)
    };
    std::vector<Job> js;
    int64_t tiles = 0, work = 0, Lmax_all = 1, chunk_all = 1, D = -1;
    for (const AttentionJob& jb : jobs) {
      const Tensor& q = *jb.q;
      check_f32(q, "attention q");
      SKV_CHECK(q.ndim() == 4, "attention: q must be [rows, heads, tokens, head_dim], got {}", q.describe());
      Job j{q.dim(0), q.dim(1), q.dim(2), q.dim(3), 0, 0, 0, tiles, false};
      int nonempty = 0;
      SKV_CHECK(jb.out->numel() == j.R * j.Lq * j.H * j.D, "attention: out {} for q {}", jb.out->describe(),
                q.describe());
      SKV_CHECK(D < 0 || j.D == D, "attention_varlen: head_dim {} beside {} (one model per call)", j.D, D);
      D = j.D;
#ifndef NDEBUG  // the CUDA kernel's limits, so a CPU test fails where a GPU would
      const char* limit = kmath::attention_launch_limit(j.R, j.H, j.D);
      SKV_CHECK(limit == nullptr, "attention: {} rows, {} heads, head_dim {}: {} (the CUDA kernel's limit)", j.R, j.H,
                j.D, limit ? limit : "");
#endif
      for (const auto& s : jb.segs) {
        SKV_CHECK(s.k->dim(0) == j.R && s.k->dim(1) == j.H && s.k->dim(3) == j.D, "attention: k {} for q {}",
                  s.k->describe(), q.describe());
        int64_t m = s.len;
        for (int64_t l : s.row_len) m = std::max(m, l);
        SKV_CHECK(s.start >= 0 && s.start + m <= s.k->dim(2), "attention: tokens [{}, {}) beyond capacity {}",
                  s.start, s.start + m, s.k->dim(2));
        SKV_CHECK(s.row_len.empty() || static_cast<int64_t>(s.row_len.size()) >= j.R, "attention: {} row lengths "
                  "for {} rows", s.row_len.size(), j.R);
        j.Lmax += m;
        nonempty += m > 0;
      }
      j.gather = nonempty > 1;
      j.chunk = std::max<int64_t>(1, std::min<int64_t>(j.Lq, kAttnChunk));
      j.nchunks = (j.Lq + j.chunk - 1) / j.chunk;
      tiles += j.R * j.H * j.nchunks;
      work += j.R * j.H * j.Lq * j.Lmax;
      Lmax_all = std::max(Lmax_all, j.Lmax);
      chunk_all = std::max(chunk_all, j.chunk);
      js.push_back(j);
    }
    if (tiles == 0) return;
    // A job whose keys lie in more than one segment gets them copied into one contiguous block per tile, so
    // both products run over all its keys at once: the result does not depend on how its store is split into
    // extents (which pages a request got), only on the keys, as with one segment.
    const bool gathers = std::any_of(js.begin(), js.end(), [](const Job& j) { return j.gather; });
#pragma omp parallel if (tiles > 1 && work > 65536)
    {
      Tensor scores = Tensor::empty({chunk_all, Lmax_all}, DType::F32, MemCategory::Workspace);
      Tensor acc = Tensor::empty({chunk_all, std::max<int64_t>(D, 1)}, DType::F32, MemCategory::Workspace);
      Tensor kv_block;
      if (gathers) kv_block = Tensor::empty({2, Lmax_all, std::max<int64_t>(D, 1)}, DType::F32, MemCategory::Workspace);
      float* S = scores.f32();
      float* A = acc.f32();
      size_t ji = 0;  // the job of the last tile (tiles come in ascending order within a thread's chunks)
#pragma omp for schedule(dynamic)
      for (int64_t tile = 0; tile < tiles; ++tile) {
        if (ji >= js.size() || tile < js[ji].tile0) ji = 0;
        while (ji + 1 < js.size() && js[ji + 1].tile0 <= tile) ++ji;
        const Job& j = js[ji];
        const AttentionJob& jb = jobs[ji];
        const int64_t H = j.H, Lq = j.Lq, Lmax = j.Lmax, chunk = j.chunk, nchunks = j.nchunks, t = tile - j.tile0;
        const int64_t r = t / (H * nchunks), h = (t / nchunks) % H, q0 = (t % nchunks) * chunk;
        const int64_t nq = std::min(chunk, Lq - q0);
        const float* Q = jb.q->f32() + ((r * H + h) * Lq + q0) * D;
        // This (row, head)'s keys and values: one segment's in place, several copied into kv_block in order.
        float* Kb = j.gather ? kv_block.f32() : nullptr;
        float* Vb = j.gather ? Kb + Lmax_all * D : nullptr;
        const float* K = Kb;
        const float* V = Vb;
        int64_t L = 0;
        for (const auto& s : jb.segs) {
          const int64_t len = s.row_len.empty() ? s.len : s.row_len[r];
          if (len == 0) continue;
          const float* k = s.k->f32() + ((r * H + h) * s.k->dim(2) + s.start) * D;
          const float* v = s.v->f32() + ((r * H + h) * s.v->dim(2) + s.start) * D;
          if (j.gather) {
            std::memcpy(Kb + L * D, k, static_cast<size_t>(len * D) * sizeof(float));
            std::memcpy(Vb + L * D, v, static_cast<size_t>(len * D) * sizeof(float));
          } else {
            K = k;
            V = v;
          }
          L += len;
        }
        if (L > 0) {  // scores = scale * Q K^T, softmax, out = P V over all L keys at once
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, L, D, scale, Q, D, K, D, 0.0f, S, Lmax);
          for (int64_t i = 0; i < nq; ++i) softmax_row(S + i * Lmax, L);
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, D, L, 1.0f, S, Lmax, V, D, 0.0f, A, D);
        } else {
          std::fill(A, A + nq * D, 0.0f);
        }
        float* op = jb.out->f32();
        for (int64_t i = 0; i < nq; ++i)
          std::memcpy(op + ((r * Lq + q0 + i) * H + h) * D, A + i * D, D * sizeof(float));
      }
    }
  }

  // oneDNN's convolution (runtime/cpu/onednn.h), in the compute dtype.
  void conv2d(const Tensor& x, const Tensor& w, const Tensor* b, int stride, int pad, Tensor& y) override {
    check_f32(x, "conv2d x");
    check_f32(y, "conv2d y");
    const int64_t N = x.dim(0), Ci = x.dim(1), H = x.dim(2), W = x.dim(3);
    const int64_t Co = w.dim(0), kh = w.dim(2), kw = w.dim(3);
    SKV_CHECK(w.dim(1) == Ci, "conv2d: weight {} for input {}", w.describe(), x.describe());
    const int64_t Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
    SKV_CHECK(y.dim(0) == N && y.dim(1) == Co && y.dim(2) == Ho && y.dim(3) == Wo, "conv2d: output {} expected [{}, {}, {}, {}]",
              y.describe(), N, Co, Ho, Wo);
    if (b) {
      check_f32(*b, "conv2d bias");
      SKV_CHECK(b->numel() == Co, "conv2d: bias {} for {} channels", b->describe(), Co);
    }
    if (N == 0) return;
    Tensor wc = w.dtype() == DType::F32 || w.dtype() == DType::BF16 ? w : w.to_f32(MemCategory::Workspace);
    onednn::conv2d(compute_dtype(), N, Ci, H, W, Co, kh, kw, stride, pad, x.f32(), wc.raw(), wc.dtype(),
                   b ? b->f32() : nullptr, y.f32(), Ho, Wo);
  }

  void group_norm(const Tensor& x, int groups, const Tensor* w, const Tensor* b, float eps, Tensor& y) override {
    check_f32(x, "group_norm x");
    const int64_t N = x.dim(0), C = x.dim(1), HW = x.numel() / (N * C);
    SKV_CHECK(C % groups == 0, "group_norm: {} channels not divisible by {} groups", C, groups);
    const int64_t cg = C / groups;
    const float* xp = x.f32();
    float* yp = y.f32();
#pragma omp parallel for collapse(2)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t g = 0; g < groups; ++g) {
        const float* src = xp + (n * C + g * cg) * HW;
        const int64_t cnt = cg * HW;
        double mean = 0, var = 0;
        for (int64_t i = 0; i < cnt; ++i) mean += src[i];
        mean /= static_cast<double>(cnt);
        for (int64_t i = 0; i < cnt; ++i) var += (src[i] - mean) * (src[i] - mean);
        var /= static_cast<double>(cnt);
        const float rstd = static_cast<float>(1.0 / std::sqrt(var + eps)), mu = static_cast<float>(mean);
        for (int64_t c = 0; c < cg; ++c) {
          const int64_t ch = g * cg + c;
          const float a = rstd * (w ? w->f32()[ch] : 1.0f);
          const float bb = (b ? b->f32()[ch] : 0.0f) - mu * a;
          const float* s = src + c * HW;
          float* o = yp + (n * C + ch) * HW;
          for (int64_t i = 0; i < HW; ++i) o[i] = s[i] * a + bb;
        }
      }
  }

  void interpolate(const Tensor& x, Interp mode, Tensor& y) override {
    check_f32(x, "interpolate x");
    if (mode == Interp::Trilinear) return trilinear(x, y);
    SKV_CHECK(x.ndim() == 4 && y.ndim() == 4 && x.dim(0) == y.dim(0) && x.dim(1) == y.dim(1),
              "interpolate: {} -> {}", x.describe(), y.describe());
    const int64_t NC = x.dim(0) * x.dim(1), H = x.dim(2), W = x.dim(3), Ho = y.dim(2), Wo = y.dim(3);
    const float* xp = x.f32();
    float* yp = y.f32();
    switch (mode) {
      case Interp::Nearest: {
#pragma omp parallel for if (NC * Ho * Wo > 65536)
        for (int64_t c = 0; c < NC; ++c)
          for (int64_t oy = 0; oy < Ho; ++oy) {
            const int64_t iy = nearest_src(H, Ho, oy);
            for (int64_t ox = 0; ox < Wo; ++ox) {
              const int64_t ix = nearest_src(W, Wo, ox);
              yp[(c * Ho + oy) * Wo + ox] = xp[(c * H + iy) * W + ix];
            }
          }
        break;
      }
      case Interp::Bilinear: {
        const auto ty = linear_taps(H, Ho), tx = linear_taps(W, Wo);
#pragma omp parallel for if (NC * Ho * Wo > 65536)
        for (int64_t c = 0; c < NC; ++c)
          for (int64_t oy = 0; oy < Ho; ++oy)
            for (int64_t ox = 0; ox < Wo; ++ox) {
              const float* p = xp + c * H * W;
              const auto &a = ty[oy], &b = tx[ox];
              const float r0 = p[a.i0 * W + b.i0] * b.w0 + p[a.i0 * W + b.i1] * b.w1;
              const float r1 = p[a.i1 * W + b.i0] * b.w0 + p[a.i1 * W + b.i1] * b.w1;
              yp[(c * Ho + oy) * Wo + ox] = r0 * a.w0 + r1 * a.w1;
            }
        break;
      }
      case Interp::Bicubic: {
        const auto ty = cubic_taps(H, Ho), tx = cubic_taps(W, Wo);
#pragma omp parallel for if (NC * Ho * Wo > 16384)
        for (int64_t c = 0; c < NC; ++c)
          for (int64_t oy = 0; oy < Ho; ++oy)
            for (int64_t ox = 0; ox < Wo; ++ox) {
              const float* p = xp + c * H * W;
              float out = 0.0f;
              for (int i = 0; i < 4; ++i) {
                const float* row = p + ty[oy].idx[i] * W;
                float t = row[tx[ox].idx[0]] * tx[ox].w[0];
                for (int j = 1; j < 4; ++j) t += row[tx[ox].idx[j]] * tx[ox].w[j];
                out = i == 0 ? t * ty[oy].w[0] : out + t * ty[oy].w[i];
              }
              yp[(c * Ho + oy) * Wo + ox] = out;
            }
        break;
      }
      case Interp::Area: {  // adaptive average pooling (PyTorch's rounding: hostdevice.h area_at)
#pragma omp parallel for if (NC * Ho * Wo > 16384)
        for (int64_t c = 0; c < NC; ++c)
          for (int64_t oy = 0; oy < Ho; ++oy)
            for (int64_t ox = 0; ox < Wo; ++ox) yp[(c * Ho + oy) * Wo + ox] = area_at(xp + c * H * W, H, W, Ho, Wo, oy, ox);
        break;
      }
      default: SKV_FAIL("interpolate: mode {} not supported for 4-D input", interp_name(mode));
    }
  }

 private:
  static bool bf16_native() {
    static const bool ok = onednn::native(DType::BF16);
    return ok;
  }

  static void softmax_row(float* p, int64_t n) {
    if (n == 0) return;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < n; ++i) mx = std::max(mx, p[i]);
    if (mx == -std::numeric_limits<float>::infinity()) {
      std::fill(p, p + n, 0.0f);
      return;
    }
    float sum = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
      p[i] = std::exp(p[i] - mx);
      sum += p[i];
    }
    const float inv = 1.0f / sum;
    for (int64_t i = 0; i < n; ++i) p[i] *= inv;
  }

  void trilinear(const Tensor& x, Tensor& y) {
    SKV_CHECK(x.ndim() == 5 && y.ndim() == 5 && x.dim(0) == y.dim(0) && x.dim(1) == y.dim(1),
              "trilinear: {} -> {}", x.describe(), y.describe());
    const int64_t NC = x.dim(0) * x.dim(1), T = x.dim(2), H = x.dim(3), W = x.dim(4);
    const int64_t To = y.dim(2), Ho = y.dim(3), Wo = y.dim(4);
    const auto tt = linear_taps(T, To), ty = linear_taps(H, Ho), tx = linear_taps(W, Wo);
    const float* xp = x.f32();
    float* yp = y.f32();
#pragma omp parallel for if (NC * To * Ho * Wo > 65536)
    for (int64_t c = 0; c < NC; ++c)
      for (int64_t ot = 0; ot < To; ++ot)
        for (int64_t oy = 0; oy < Ho; ++oy)
          for (int64_t ox = 0; ox < Wo; ++ox)
            yp[((c * To + ot) * Ho + oy) * Wo + ox] = trilinear_at(xp + c * T * H * W, H, W, tt[ot], ty[oy], tx[ox]);
  }
};

}  // namespace

Backend& cpu_backend() {
  static CpuBackend b;
  return b;
}

}  // namespace skv
