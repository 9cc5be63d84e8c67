// Each CPU op against a naive reference (or PyTorch's own numbers for interpolation).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "runtime/backend.h"
#include "runtime/hostdevice.h"
#include "test_util.h"

namespace skv {

using test::max_abs_diff;
using test::randn;

namespace {
Backend& be() { return cpu_backend(); }

// Naive conv2d in double, NCHW / OIHW, zero padding; `round` is applied to every input and weight first.
std::vector<double> naive_conv2d(const Tensor& x, const Tensor& w, const Tensor& b, int stride, int pad,
                                 float (*round)(float)) {
  const int N = x.dim(0), Ci = x.dim(1), H = x.dim(2), W = x.dim(3), Co = w.dim(0), ks = w.dim(2);
  const int Ho = (H + 2 * pad - ks) / stride + 1, Wo = (W + 2 * pad - ks) / stride + 1;
  std::vector<double> y(static_cast<size_t>(N) * Co * Ho * Wo);
  for (int n = 0; n < N; ++n)
    for (int co = 0; co < Co; ++co)
      for (int oy = 0; oy < Ho; ++oy)
        for (int ox = 0; ox < Wo; ++ox) {
          double s = b.f32()[co];
          for (int ci = 0; ci < Ci; ++ci)
            for (int dy = 0; dy < ks; ++dy)
              for (int dx = 0; dx < ks; ++dx) {
                const int iy = oy * stride - pad + dy, ix = ox * stride - pad + dx;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                s += static_cast<double>(round(x.f32()[((n * Ci + ci) * H + iy) * W + ix])) *
                     round(w.f32()[((co * Ci + ci) * ks + dy) * ks + dx]);
              }
          y[((static_cast<size_t>(n) * Co + co) * Ho + oy) * Wo + ox] = s;
        }
  return y;
}
float identity(float v) { return v; }
float round_bf16(float v) { return bf16_to_f32(f32_to_bf16(v)); }
}  // namespace

TEST(CpuOps, LinearMatchesNaiveForEveryWeightDtype) {
  const int M = 5, K = 7, N = 3;
  Tensor x = randn({M, K}, 1), w = randn({N, K}, 2), b = randn({N}, 3);
  Tensor y = Tensor::empty({M, N});
  be().linear(x, w, &b, y);
  std::vector<float> ref(M * N);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double s = b.f32()[n];
      for (int k = 0; k < K; ++k) s += x.f32()[m * K + k] * w.f32()[n * K + k];
      ref[m * N + n] = static_cast<float>(s);
    }
  EXPECT_LT(max_abs_diff(y, ref), 1e-5);
  Tensor wh = Tensor::empty({N, K}, DType::F16);
  for (int i = 0; i < N * K; ++i) wh.data<uint16_t>()[i] = f32_to_f16(w.f32()[i]);
  Tensor yh = Tensor::empty({M, N});
  be().linear(x, wh, &b, yh);
  EXPECT_LT(max_abs_diff(yh, ref), 1e-2);
}

TEST(CpuOps, NormsAndModulation) {
  const int R = 2, T = 3, C = 8;
  Tensor x = randn({R, T, C}, 4, 2.0f), w = randn({C}, 5), b = randn({C}, 6);
  Tensor y = Tensor::empty(x.shape());
  be().layer_norm(x, &w, &b, 1e-6f, y);
  for (int i = 0; i < R * T; ++i) {
    double mu = 0, var = 0;
    for (int c = 0; c < C; ++c) mu += x.f32()[i * C + c];
    mu /= C;
    for (int c = 0; c < C; ++c) var += std::pow(x.f32()[i * C + c] - mu, 2);
    var /= C;
    for (int c = 0; c < C; ++c)
      EXPECT_NEAR(y.f32()[i * C + c], (x.f32()[i * C + c] - mu) / std::sqrt(var + 1e-6) * w.f32()[c] + b.f32()[c], 1e-5);
  }
  be().rms_norm(x, &w, 1e-6f, y);
  for (int i = 0; i < R * T; ++i) {
    double ss = 0;
    for (int c = 0; c < C; ++c) ss += std::pow(x.f32()[i * C + c], 2);
    for (int c = 0; c < C; ++c)
      EXPECT_NEAR(y.f32()[i * C + c], x.f32()[i * C + c] / std::sqrt(ss / C + 1e-6) * w.f32()[c], 1e-5);
  }
  Tensor sc = randn({R, C}, 7), sh = randn({R, C}, 8), g = randn({R, C}, 9);
  be().modulate(x, sc, sh, y);
  Tensor acc = x.clone();
  be().add_gated(acc, y, &g);
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < C; ++c) {
        const int i = (r * T + t) * C + c;
        const float m = x.f32()[i] * (1 + sc.f32()[r * C + c]) + sh.f32()[r * C + c];
        EXPECT_NEAR(y.f32()[i], m, 1e-6);
        EXPECT_NEAR(acc.f32()[i], x.f32()[i] + m * g.f32()[r * C + c], 1e-5);
      }
}

TEST(CpuOps, ElementwiseOps) {
  Tensor x = randn({3, 5}, 10);
  Tensor a = x.clone();
  be().gelu_tanh(a);
  Tensor s = Tensor::empty(x.shape());
  be().silu(x, s);
  Tensor sm = x.clone();
  be().softmax_lastdim(sm);
  Tensor y = randn({3, 5}, 11), ax = Tensor::empty({3, 5});
  be().axpby(x, 0.25f, y, 2.0f, ax);
  Tensor row = randn({5}, 12), bc = Tensor::empty({3, 5});
  be().add(x, row, bc);
  for (int i = 0; i < 3; ++i) {
    double z = 0;
    for (int j = 0; j < 5; ++j) z += std::exp(x.f32()[i * 5 + j]);
    for (int j = 0; j < 5; ++j) {
      const float v = x.f32()[i * 5 + j];
      EXPECT_NEAR(a.f32()[i * 5 + j], gelu_tanh(v), 1e-7);
      EXPECT_NEAR(s.f32()[i * 5 + j], v / (1 + std::exp(-v)), 1e-6);
      EXPECT_NEAR(sm.f32()[i * 5 + j], std::exp(v) / z, 1e-6);
      EXPECT_NEAR(ax.f32()[i * 5 + j], 0.25f * v + 2.0f * y.f32()[i * 5 + j], 1e-6);
      EXPECT_NEAR(bc.f32()[i * 5 + j], v + row.f32()[j], 1e-6);
    }
  }
  Tensor t = Tensor::empty({2, 5, 3});
  Tensor t0 = t.slice0(0, 1);
  be().transpose_last2(x.reshape({1, 3, 5}), t0);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 5; ++j) EXPECT_EQ(t.f32()[j * 3 + i], x.f32()[i * 5 + j]);
  Tensor table = randn({4, 3}, 13), e = Tensor::empty({2, 3});
  be().embedding(table, {3, 1}, e);
  EXPECT_EQ(e.f32()[0], table.f32()[9]);
  EXPECT_EQ(e.f32()[4], table.f32()[4]);
}

TEST(CpuOps, HeadsSplitNormaliseAndRotate) {
  const int R = 2, L = 3, H = 2, D = 4;
  Tensor qkv = randn({R, L, 3 * H * D}, 14), qb = randn({H * D}, 15), vb = randn({H * D}, 16);
  Tensor q = Tensor::empty({R, H, L, D}), k = Tensor::empty({R, H, L, D}), v = Tensor::empty({R, H, L, D});
  be().split_qkv(qkv, &qb, nullptr, &vb, q, k, v);
  for (int r = 0; r < R; ++r)
    for (int l = 0; l < L; ++l)
      for (int h = 0; h < H; ++h)
        for (int d = 0; d < D; ++d) {
          const float* row = qkv.f32() + (r * L + l) * 3 * H * D;
          const int o = ((r * H + h) * L + l) * D + d;
          EXPECT_EQ(q.f32()[o], row[h * D + d] + qb.f32()[h * D + d]);
          EXPECT_EQ(k.f32()[o], row[H * D + h * D + d]);
          EXPECT_EQ(v.f32()[o], row[2 * H * D + h * D + d] + vb.f32()[h * D + d]);
        }
  Tensor back = Tensor::empty({R, L, H * D});
  be().from_heads(q, back);
  Tensor again = Tensor::empty(q.shape());
  be().to_heads(back, nullptr, again);
  EXPECT_EQ(max_abs_diff(q, again), 0.0);
  Tensor hs = Tensor::from_vector({2.0f, 3.0f}, {H});
  be().l2norm_heads(q, &hs);
  for (int rh = 0; rh < R * H; ++rh)
    for (int l = 0; l < L; ++l) {
      double n = 0;
      for (int d = 0; d < D; ++d) n += std::pow(q.f32()[(rh * L + l) * D + d], 2);
      EXPECT_NEAR(std::sqrt(n), rh % H == 0 ? 2.0 : 3.0, 1e-5);
    }
  // RoPE with angle pi/2 on pair 0 and 0 on pair 1: (a, b) -> (-b, a), second pair unchanged.
  Tensor cs = Tensor::from_vector({0, 1, 0, 1, /*sin*/ 1, 0, 1, 0}, {2, 2, 2});
  Tensor x = randn({1, 1, 2, 4}, 17), xr = x.clone();
  be().rope(xr, cs, {0, 1});
  for (int l = 0; l < 2; ++l) {
    const float* a = x.f32() + l * 4;
    const float* b = xr.f32() + l * 4;
    EXPECT_NEAR(b[0], -a[1], 1e-7);
    EXPECT_NEAR(b[1], a[0], 1e-7);
    EXPECT_NEAR(b[2], a[2], 1e-7);
    EXPECT_NEAR(b[3], a[3], 1e-7);
  }
}

TEST(CpuOps, AttentionOverSegmentsMatchesNaive) {
  const int R = 2, H = 3, Lq = 5, D = 8, cap = 11, len1 = 7, L2 = 4;
  Tensor q = randn({R, H, Lq, D}, 20), k1 = randn({R, H, cap, D}, 21), v1 = randn({R, H, cap, D}, 22);
  Tensor k2 = randn({R, H, L2, D}, 23), v2 = randn({R, H, L2, D}, 24);
  Tensor out = Tensor::empty({R, Lq, H * D});
  const float scale = 0.3f;
  be().attention(q, {{&k1, &v1, len1, {}}, {&k2, &v2, L2, {}}}, scale, out);
  for (int r = 0; r < R; ++r)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < Lq; ++i) {
        std::vector<double> s;
        std::vector<const float*> vs;
        const float* qi = q.f32() + ((r * H + h) * Lq + i) * D;
        auto add = [&](const Tensor& k, const Tensor& v, int n) {
          for (int j = 0; j < n; ++j) {
            const float* kj = k.f32() + ((r * H + h) * k.dim(2) + j) * D;
            double d = 0;
            for (int e = 0; e < D; ++e) d += qi[e] * kj[e];
            s.push_back(d * scale);
            vs.push_back(v.f32() + ((r * H + h) * v.dim(2) + j) * D);
          }
        };
        add(k1, v1, len1);
        add(k2, v2, L2);
        const double mx = *std::max_element(s.begin(), s.end());
        double z = 0;
        for (double& e : s) z += (e = std::exp(e - mx));
        for (int e = 0; e < D; ++e) {
          double o = 0;
          for (size_t j = 0; j < s.size(); ++j) o += s[j] / z * vs[j][e];
          EXPECT_NEAR(out.f32()[((r * Lq + i) * H + h) * D + e], o, 1e-5);
        }
      }
  // per-row lengths: row 1 sees only 2 keys of the first segment
  Tensor out2 = Tensor::empty({R, Lq, H * D});
  be().attention(q, {{&k1, &v1, 0, {len1, 2}}}, scale, out2);
  Tensor k1b = k1.clone(), v1b = v1.clone();
  Tensor out3 = Tensor::empty({R, Lq, H * D});
  be().attention(q, {{&k1b, &v1b, 2, {}}}, scale, out3);
  EXPECT_LT(max_abs_diff(out2.f32() + Lq * H * D, out3.f32() + Lq * H * D, Lq * H * D), 1e-6);
}

// One call for every request of a packed step (attention_varlen) gives each job exactly what its own
// attention() call gives: jobs of different rows, query and key lengths, segment starts, per-row lengths,
// a job without queries, and enough jobs and work for the tiles of several jobs to share the parallel loop.
TEST(CpuOps, AttentionVarlenEqualsOneCallPerJob) {
  const int H = 3, D = 16;
  struct Spec {
    int R, Lq, cap, start, len, cur;
    bool row_len;
  };
  const std::vector<Spec> specs = {{2, 5, 11, 2, 7, 5, false}, {4, 1, 4, 0, 3, 1, false}, {2, 0, 6, 0, 6, 0, false},
                                   {2, 40, 30, 0, 30, 0, true}, {2, 64, 260, 10, 200, 64, false},
                                   {2, 4, 1, 0, 0, 4, false}};
  std::vector<Tensor> q, k, v, ck, cv, want, got;
  for (size_t i = 0; i < specs.size(); ++i) {
    const Spec& c = specs[i];
    const uint32_t seed = 100 + 10 * static_cast<uint32_t>(i);
    q.push_back(randn({c.R, H, c.Lq, D}, seed));
    k.push_back(randn({c.R, H, c.cap, D}, seed + 1));
    v.push_back(randn({c.R, H, c.cap, D}, seed + 2));
    ck.push_back(randn({c.R, H, std::max(c.cur, 1), D}, seed + 3));
    cv.push_back(randn({c.R, H, std::max(c.cur, 1), D}, seed + 4));
    want.push_back(Tensor::empty({c.R, c.Lq, H * D}));
    got.push_back(Tensor::empty({c.R, c.Lq, H * D}));
  }
  std::vector<AttentionJob> jobs(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const Spec& c = specs[i];
    KVSegment hist{&k[i], &v[i], c.len, {}, c.start};
    if (c.row_len) hist = KVSegment{&k[i], &v[i], 0, {c.cap, c.cap / 3}, 0};
    jobs[i].segs = {hist};
    if (c.cur > 0) jobs[i].segs.push_back({&ck[i], &cv[i], c.cur, {}});
    jobs[i].q = &q[i];
    jobs[i].out = &got[i];
    be().attention(q[i], jobs[i].segs, 0.25f, want[i]);
  }
  be().attention_varlen(jobs, 0.25f);
  for (size_t i = 0; i < specs.size(); ++i) {
    ASSERT_EQ(want[i].numel(), got[i].numel());
    EXPECT_EQ(std::memcmp(want[i].f32(), got[i].f32(), static_cast<size_t>(want[i].numel()) * sizeof(float)), 0)
        << "job " << i;
  }
  // The last job (an empty history segment before the current scale) is finite.
  for (int64_t e = 0; e < got.back().numel(); ++e) ASSERT_TRUE(std::isfinite(got.back().f32()[e]));
}

TEST(CpuOps, Conv2dMatchesNaive) {
  for (int ks : {1, 3}) {
    for (int stride : {1, 2}) {
      const int N = 2, Ci = 3, Co = 4, H = 5, W = 6, pad = ks / 2;
      Tensor x = randn({N, Ci, H, W}, 30), w = randn({Co, Ci, ks, ks}, 31), b = randn({Co}, 32);
      const int Ho = (H + 2 * pad - ks) / stride + 1, Wo = (W + 2 * pad - ks) / stride + 1;
      Tensor y = Tensor::empty({N, Co, Ho, Wo});
      be().conv2d(x, w, &b, stride, pad, y);
      const std::vector<double> want = naive_conv2d(x, w, b, stride, pad, identity);
      for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(y.f32()[i], want[i], 1e-4);
    }
  }
}

// --compute-dtype bf16: linear (bf16 weights) and conv2d round both inputs to bf16 and accumulate in F32.
// Checked tightly against a double-precision product of the rounded inputs, and against F32 within
// bf16's tolerance. Skipped where the CPU has no bf16 instructions (the backend refuses the dtype there).
TEST(CpuOps, Bf16LinearAndConvRoundInputsAndAccumulateInF32) {
  std::string missing;
  if (!be().compute_dtype_supported(DType::BF16, &missing)) GTEST_SKIP() << "this CPU lacks " << missing;
  struct Restore {
    ~Restore() {
      be().set_compute_dtype(DType::F32);
      be().set_weight_dtype(DType::F32);
    }
  } restore;
  be().set_compute_dtype(DType::BF16);

  // Linear, M across oneDNN's small- and large-row kernels, K not a multiple of the blocking.
  for (int M : {1, 37, 300}) {
    const int K = 200, N = 48;
    Tensor x = randn({M, K}, 40), w = randn({N, K}, 41), b = randn({N}, 42);
    Tensor wb = Tensor::empty({N, K}, DType::BF16);
    for (int i = 0; i < N * K; ++i) wb.data<uint16_t>()[i] = f32_to_bf16(w.f32()[i]);
    Tensor y = Tensor::empty({M, N});
    be().linear(x, wb, &b, y);
    double err_rounded = 0, err_f32 = 0;
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) {
        double sr = b.f32()[n], sf = b.f32()[n];
        for (int k = 0; k < K; ++k) {
          sr += static_cast<double>(round_bf16(x.f32()[m * K + k])) * round_bf16(w.f32()[n * K + k]);
          sf += static_cast<double>(x.f32()[m * K + k]) * w.f32()[n * K + k];
        }
        err_rounded = std::max(err_rounded, std::fabs(y.f32()[m * N + n] - sr));
        err_f32 = std::max(err_f32, std::fabs(y.f32()[m * N + n] - sf));
      }
    EXPECT_LT(err_rounded, 1e-4) << "M=" << M << ": not an F32 accumulation of bf16-rounded inputs";
    EXPECT_LT(err_f32, 0.25) << "M=" << M;  // K=200 unit normals: sum ~ 14, bf16 relative 2^-9 per input
    EXPECT_GT(err_f32, 1e-4) << "M=" << M << ": the inputs were not rounded to bf16";
  }

  // Conv2d (F32 weights rounded on the fly), 3x3 and 1x1, stride 1 and 2.
  for (int ks : {1, 3}) {
    for (int stride : {1, 2}) {
      const int N = 2, Ci = 19, Co = 20, H = 9, W = 7, pad = ks / 2;
      Tensor x = randn({N, Ci, H, W}, 43), w = randn({Co, Ci, ks, ks}, 44), b = randn({Co}, 45);
      const int Ho = (H + 2 * pad - ks) / stride + 1, Wo = (W + 2 * pad - ks) / stride + 1;
      Tensor y = Tensor::empty({N, Co, Ho, Wo});
      be().conv2d(x, w, &b, stride, pad, y);
      const std::vector<double> want = naive_conv2d(x, w, b, stride, pad, round_bf16);
      double err_rounded = 0;
      for (size_t i = 0; i < want.size(); ++i) err_rounded = std::max(err_rounded, std::fabs(y.f32()[i] - want[i]));
      EXPECT_LT(err_rounded, 1e-4) << "conv " << ks << "x" << ks << " stride " << stride;
    }
  }
}

TEST(CpuOps, GroupNormMatchesNaive) {
  const int N = 2, C = 64, HW = 5;
  Tensor x = randn({N, C, 1, HW}, 40, 3.0f), w = randn({C}, 41), b = randn({C}, 42);
  Tensor y = Tensor::empty(x.shape());
  be().group_norm(x, 32, &w, &b, 1e-6f, y);
  for (int n = 0; n < N; ++n)
    for (int g = 0; g < 32; ++g) {
      double mu = 0, var = 0;
      const float* p = x.f32() + (n * C + g * 2) * HW;
      for (int i = 0; i < 2 * HW; ++i) mu += p[i];
      mu /= 2 * HW;
      for (int i = 0; i < 2 * HW; ++i) var += std::pow(p[i] - mu, 2);
      var /= 2 * HW;
      for (int i = 0; i < 2 * HW; ++i) {
        const int c = g * 2 + i / HW;
        EXPECT_NEAR(y.f32()[(n * C + g * 2) * HW + i], (p[i] - mu) / std::sqrt(var + 1e-6) * w.f32()[c] + b.f32()[c], 1e-5);
      }
    }
}

// Reference numbers: torch 1.13 F.interpolate on x = sin(arange(24)).reshape(1, 2, 3, 4).
TEST(CpuOps, InterpolationMatchesPyTorch) {
  std::vector<float> in(24);
  for (int i = 0; i < 24; ++i) in[i] = std::sin(static_cast<float>(i));
  Tensor x = Tensor::from_vector(in, {1, 2, 3, 4});
  auto run = [&](Interp m, int h, int w) {
    Tensor y = Tensor::empty({1, 2, h, w});
    be().interpolate(x, m, y);
    return y;
  };
  const std::vector<float> area = {-0.218563959f, 0.12810716f,   0.356997132f,  -0.0785625279f, -0.342560589f, -0.291610062f,
                                   -0.341426671f, -0.0754025728f, 0.259946316f, 0.125075012f,  -0.221145093f, -0.364045441f};
  EXPECT_LT(max_abs_diff(run(Interp::Area, 2, 3), area), 1e-6);
  const std::vector<float> bil = {-0.0924384966f, 0.501745701f, 0.327092022f, 0.472241342f, -0.204255983f, -0.567766607f,
                                  -0.382875293f, 0.314992309f, 0.530189097f, 0.575134635f, 0.0963784903f, -0.530060947f};
  EXPECT_LT(max_abs_diff(run(Interp::Bilinear, 2, 3), bil), 1e-6);
  Tensor x5 = x.reshape({1, 2, 1, 3, 4}), y5 = Tensor::empty({1, 2, 1, 2, 3});
  be().interpolate(x5, Interp::Trilinear, y5);
  EXPECT_LT(max_abs_diff(y5, bil), 1e-6);
  const std::vector<float> bic = {
      -0.0207747295f, 0.392955899f,   0.960010529f,  1.19449961f,    0.970519841f,  0.409667283f,  -0.000854747079f,
      -0.465356261f,  -0.287415266f,  -0.00185673242f, 0.299738407f, 0.486288875f,  0.488819003f,  0.459928483f,
      -0.736748993f,  -0.867462575f,  -0.978747427f, -0.725906491f,  -0.194450974f, 0.379701883f,  0.74989301f,
      0.307644427f,   0.101722211f,   -0.207658708f, -0.455129683f,  -0.527914226f, -0.407538444f, -0.299403012f,
      1.21783495f,    1.01648605f,    0.630245328f,  -0.0150563475f, -0.654578626f, -1.02660203f,  -1.21756172f,
      -0.670897484f,  -0.218322068f,  0.461155742f,  1.00274098f,    1.15945733f,   0.892095983f,  0.652740061f,
      -0.55445075f,   -0.461895138f,  -0.284838378f, 0.00943468884f, 0.30008623f,   0.468234241f,  0.554279625f,
      -0.221081659f,  -0.530331612f,  -0.93258208f,  -1.00378847f,   -0.689724386f, -0.144146666f, 0.239257723f,
      0.507125258f,   0.348370016f,   0.085205473f,  -0.224310458f,  -0.447732091f, -0.499091148f, -0.503063262f,
      1.03010821f,    1.07999814f,    1.05409133f,   0.628201306f,   -0.0388022698f, -0.657888412f, -1.04148293f};
  // PyTorch's vectorised kernel sums in another order: ~10 ulp apart. An index or weight rule error
  // would be off by 1e-2 or more.
  EXPECT_LT(max_abs_diff(run(Interp::Bicubic, 5, 7), bic), 5e-6);
  Tensor up = run(Interp::Nearest, 6, 8);
  for (int c = 0; c < 2; ++c)
    for (int y = 0; y < 6; ++y)
      for (int xx = 0; xx < 8; ++xx) EXPECT_EQ(up.f32()[(c * 6 + y) * 8 + xx], in[(c * 3 + y / 2) * 4 + xx / 2]);
}

TEST(CpuOps, KVTokenMovesGatherInPlace) {
  const int R = 1, H = 2, cap = 6, D = 2;
  Tensor store = Tensor::zeros({R, H, cap, D}), cur = Tensor::empty({R, H, 3, D});
  for (int i = 0; i < R * H * cap * D; ++i) store.f32()[i] = static_cast<float>(i);
  for (int i = 0; i < R * H * 3 * D; ++i) cur.f32()[i] = 100.0f + i;
  be().copy_tokens(cur, 2, store, 4);  // tokens 0,1 of cur -> slots 4,5
  EXPECT_EQ(store.f32()[4 * D], 100.0f);
  EXPECT_EQ(store.f32()[(cap + 5) * D + 1], 100.0f + (3 + 1) * D + 1);
  // keep store slots 1, 3 and current token 2 (index hist_len + 2 with hist_len = 4)
  std::vector<int32_t> kept = {1, 3, 6, 0, 2, 4};
  Tensor kt = Tensor::external(kept.data(), {R, H, 3}, DType::I32);
  Tensor before = store.clone();
  be().gather_tokens(store, 4, cur, kt, 3);
  EXPECT_EQ(store.f32()[0], before.f32()[1 * D]);
  EXPECT_EQ(store.f32()[1 * D], before.f32()[3 * D]);
  EXPECT_EQ(store.f32()[2 * D], cur.f32()[2 * D]);
  EXPECT_EQ(store.f32()[(cap + 0) * D], before.f32()[(cap + 0) * D]);
  EXPECT_EQ(store.f32()[(cap + 1) * D], before.f32()[(cap + 2) * D]);
  EXPECT_EQ(store.f32()[(cap + 2) * D], cur.f32()[(3 + 0) * D]);
}

}  // namespace skv
