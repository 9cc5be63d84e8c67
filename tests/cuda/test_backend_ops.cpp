// Every Backend op on CUDA against the CPU backend (ggml's test-backend-ops): random inputs, several
// shapes per op including odd and degenerate sizes, compared by normalised squared error
// (sum (gpu - cpu)^2 / sum cpu^2) or exactly where the op only moves data. Then the ScaleKV selection
// kernels against their host reference, and a tiny VAR model end to end (teacher-forced logits and
// the decoded image). Without a visible GPU every test skips with the reason (GTEST_SKIP).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>
#include <random>
#include <tuple>

#include "launcher/bench_cuda.h"
#include "parallel/communicator.h"
#include "runtime/backend.h"
#include "runtime/check.h"
#include "runtime/cuda/cuda_device.h"
#include "runtime/cuda/kv_select.h"
#include "runtime/hostdevice.h"
#include "runtime/kv_select_ref.h"
#include "runtime/models/var_generate.h"
#include "test_util.h"
#include "models/var_test_util.h"

namespace skv {

namespace {

using test::randn;

// Normalised squared error; 0 when both are all-zero.
double nmse(const Tensor& got, const Tensor& want) {
  EXPECT_EQ(got.numel(), want.numel());
  const std::vector<float> a = got.to_vector(), b = want.to_vector();
  double num = 0, den = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    if (std::isinf(b[i]) && a[i] == b[i]) continue;
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return den == 0 ? num : num / den;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

Tensor to_half(const Tensor& f, DType dt) {
  Tensor h = Tensor::empty(f.shape(), dt);
  for (int64_t i = 0; i < f.numel(); ++i)
    h.data<uint16_t>()[i] = dt == DType::BF16 ? f32_to_bf16(f.f32()[i]) : f32_to_f16(f.f32()[i]);
  return h;
}

constexpr double kTol = 1e-10;  // FP32 ops that only differ in summation order

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
    gpu_ = &backend_for("cuda");
  }
  Backend& cpu() { return cpu_backend(); }
  Backend& gpu() { return *gpu_; }
  Tensor up(const Tensor& h) { return gpu_->upload(h, MemCategory::Activations); }
  Tensor down(const Tensor& d) { return gpu_->download(d); }
  Tensor gempty(const Shape& s, DType dt = DType::F32) { return gpu_->empty(s, dt); }
  Backend* gpu_ = nullptr;
};

}  // namespace

TEST_F(CudaOps, UploadDownloadCopyFill) {
  for (int64_t n : {1, 7, 1000, 65537}) {
    Tensor h = randn({n}, 1);
    Tensor d = up(h);
    EXPECT_EQ(d.device(), Device::CUDA);
    EXPECT_TRUE(same_bits(down(d), h));
    Tensor e = gempty({n});
    gpu().copy(d, e);
    EXPECT_TRUE(same_bits(down(e), h));
    gpu().fill(e, 2.5f);
    for (float v : down(e).to_vector()) ASSERT_EQ(v, 2.5f);
    Tensor z = gpu().zeros({n}, DType::BF16);
    for (float v : down(z).to_vector()) ASSERT_EQ(v, 0.0f);
  }
  Tensor empty = gempty({0, 3});
  EXPECT_EQ(down(empty).numel(), 0);
}

TEST_F(CudaOps, AllocatorAccountsDeviceBytesByCategory) {
  Allocator& a = gpu().allocator();
  const int64_t before = a.stats().cur(MemCategory::KV);
  {
    Tensor t = gpu().empty({1000, 33}, DType::F32, MemCategory::KV);
    EXPECT_EQ(a.stats().cur(MemCategory::KV) - before, 1000 * 33 * 4);
  }
  EXPECT_EQ(a.stats().cur(MemCategory::KV), before);
}

TEST_F(CudaOps, LinearF32MatchesCpu) {
  struct S {
    int M, K, N;
  };
  for (S s : {S{1, 1, 1}, S{5, 7, 3}, S{33, 129, 65}, S{300, 64, 1}, S{2, 1000, 17}, S{257, 256, 255}}) {
    Tensor x = randn({s.M, s.K}, 1), w = randn({s.N, s.K}, 2), b = randn({s.N}, 3);
    for (bool with_bias : {false, true}) {
      Tensor want = Tensor::empty({s.M, s.N}), got = gempty({s.M, s.N});
      cpu().linear(x, w, with_bias ? &b : nullptr, want);
      Tensor dw = up(w), db = up(b);
      gpu().linear(up(x), dw, with_bias ? &db : nullptr, got);
      EXPECT_LT(nmse(down(got), want), kTol) << s.M << "x" << s.K << "x" << s.N;
    }
  }
}

TEST_F(CudaOps, LinearHalfWeightsMatchCpuWithTheSameWeights) {
  for (DType dt : {DType::BF16, DType::F16}) {
    for (auto [M, K, N] : {std::tuple{3, 64, 5}, std::tuple{77, 200, 129}}) {
      Tensor x = randn({M, K}, 4), w = to_half(randn({N, K}, 5, 0.1f), dt), b = randn({N}, 6);
      Tensor want = Tensor::empty({M, N}), got = gempty({M, N});
      cpu().linear(x, w, &b, want);  // exact half weights, F32 activations
      Tensor dw = up(w), db = up(b);
      gpu().linear(up(x), dw, &db, got);  // activations rounded to the weight dtype: ~2^-9 (bf16) relative
      EXPECT_LT(nmse(down(got), want), dt == DType::BF16 ? 1e-4 : 1e-6) << dtype_name(dt);
    }
  }
}

TEST_F(CudaOps, NormsMatchCpu) {
  for (auto [R, T, C] : {std::tuple{1, 1, 1}, std::tuple{2, 3, 8}, std::tuple{3, 17, 1000}, std::tuple{1, 2, 4099}}) {
    Tensor x = randn({R, T, C}, 7, 3.0f), w = randn({C}, 8), b = randn({C}, 9);
    Tensor dx = up(x), dw = up(w), db = up(b);
    for (int variant = 0; variant < 3; ++variant) {
      const Tensor* hw = variant > 0 ? &w : nullptr;
      const Tensor* hb = variant > 1 ? &b : nullptr;
      Tensor want = Tensor::empty(x.shape()), got = gempty(x.shape());
      cpu().layer_norm(x, hw, hb, 1e-6f, want);
      gpu().layer_norm(dx, variant > 0 ? &dw : nullptr, variant > 1 ? &db : nullptr, 1e-6f, got);
      EXPECT_LT(nmse(down(got), want), kTol);
      cpu().rms_norm(x, hw, 1e-6f, want);
      gpu().rms_norm(dx, variant > 0 ? &dw : nullptr, 1e-6f, got);
      EXPECT_LT(nmse(down(got), want), kTol);
    }
  }
}

TEST_F(CudaOps, ElementwiseOpsMatchCpu) {
  for (auto [R, T, C] : {std::tuple{1, 1, 1}, std::tuple{2, 5, 3}, std::tuple{4, 33, 129}, std::tuple{3, 1000, 65}}) {
    const Shape s{R, T, C};
    Tensor x = randn(s, 10), y = randn(s, 11), sc = randn({R, C}, 12), sh = randn({R, C}, 13), g = randn({R, C}, 14);
    Tensor dx = up(x), dy = up(y), dsc = up(sc), dsh = up(sh), dg = up(g);
    Tensor want = Tensor::empty(s), got = gempty(s);
    cpu().modulate(x, sc, sh, want);
    gpu().modulate(dx, dsc, dsh, got);
    EXPECT_LT(nmse(down(got), want), kTol) << "modulate";
    for (bool gated : {false, true}) {
      Tensor hw = x.clone(), dw = up(x);
      cpu().add_gated(hw, y, gated ? &g : nullptr);
      gpu().add_gated(dw, dy, gated ? &dg : nullptr);
      EXPECT_LT(nmse(down(dw), hw), kTol) << "add_gated";
    }
    Tensor row = randn({C}, 15), drow = up(row);
    cpu().add(x, row, want);
    gpu().add(dx, drow, got);
    EXPECT_LT(nmse(down(got), want), kTol) << "add (broadcast)";
    cpu().axpby(x, 0.25f, y, -2.0f, want);
    gpu().axpby(dx, 0.25f, dy, -2.0f, got);
    EXPECT_LT(nmse(down(got), want), kTol) << "axpby";
    Tensor hs = x.clone(), ds = up(x);
    cpu().scale(hs, 0.3f);
    gpu().scale(ds, 0.3f);
    EXPECT_LT(nmse(down(ds), hs), kTol) << "scale";
    Tensor hg = x.clone(), dgl = up(x);
    cpu().gelu_tanh(hg);
    gpu().gelu_tanh(dgl);
    EXPECT_LT(nmse(down(dgl), hg), kTol) << "gelu";
    cpu().silu(x, want);
    gpu().silu(dx, got);
    EXPECT_LT(nmse(down(got), want), kTol) << "silu";
    Tensor hm = x.clone(), dm = up(x);
    cpu().softmax_lastdim(hm);
    gpu().softmax_lastdim(dm);
    EXPECT_LT(nmse(down(dm), hm), kTol) << "softmax";
    Tensor tw = Tensor::empty({R, C, T}), tg = gempty({R, C, T});
    cpu().transpose_last2(x, tw);
    gpu().transpose_last2(dx, tg);
    EXPECT_TRUE(same_bits(down(tg), tw)) << "transpose";
  }
  Tensor inf = Tensor::from_vector({-INFINITY, -INFINITY, 1, 2}, {2, 2}), dinf = up(inf);
  cpu().softmax_lastdim(inf);
  gpu().softmax_lastdim(dinf);
  EXPECT_EQ(down(dinf).to_vector(), inf.to_vector());  // a row of -inf becomes zeros, as on the CPU
}

TEST_F(CudaOps, EmbeddingMatchesCpuForEveryTableDtype) {
  Tensor table = randn({50, 33}, 16);
  const std::vector<int64_t> idx = {3, 0, 49, 3, 17};
  Tensor want = Tensor::empty({5, 33}), got = gempty({5, 33});
  cpu().embedding(table, idx, want);
  Tensor dt = up(table);
  gpu().embedding(dt, idx, got);
  EXPECT_TRUE(same_bits(down(got), want));
  Tensor bt = up(to_half(table, DType::BF16));
  gpu().embedding(bt, idx, got);
  EXPECT_LT(nmse(down(got), want), 1e-5);
  EXPECT_THROW(gpu().embedding(dt, {50}, got), Error);
}

TEST_F(CudaOps, HeadLayoutsNormsAndRopeMatchCpu) {
  for (auto [R, L, H, D] : {std::tuple{1, 1, 1, 2}, std::tuple{2, 3, 2, 4}, std::tuple{3, 17, 5, 64}, std::tuple{2, 9, 3, 128}}) {
    Tensor qkv = randn({R, L, 3 * H * D}, 17), qb = randn({H * D}, 18), kb = randn({H * D}, 19), vb = randn({H * D}, 20);
    Tensor dqkv = up(qkv), dqb = up(qb), dkb = up(kb), dvb = up(vb);
    const Shape hs{R, H, L, D};
    for (int variant = 0; variant < 2; ++variant) {
      Tensor q = Tensor::empty(hs), k = Tensor::empty(hs), v = Tensor::empty(hs);
      Tensor gq = gempty(hs), gk = gempty(hs), gv = gempty(hs);
      cpu().split_qkv(qkv, variant ? &qb : nullptr, variant ? &kb : nullptr, variant ? &vb : nullptr, q, k, v);
      gpu().split_qkv(dqkv, variant ? &dqb : nullptr, variant ? &dkb : nullptr, variant ? &dvb : nullptr, gq, gk, gv);
      EXPECT_TRUE(same_bits(down(gq), q) && same_bits(down(gk), k) && same_bits(down(gv), v)) << "split_qkv";
    }
    Tensor flat = randn({R, L, H * D}, 21), dflat = up(flat);
    Tensor th = Tensor::empty(hs), tg = gempty(hs);
    cpu().to_heads(flat, &qb, th);
    gpu().to_heads(dflat, &dqb, tg);
    EXPECT_TRUE(same_bits(down(tg), th)) << "to_heads";
    Tensor fh = Tensor::empty({R, L, H * D}), fg = gempty({R, L, H * D});
    cpu().from_heads(th, fh);
    gpu().from_heads(tg, fg);
    EXPECT_TRUE(same_bits(down(fg), fh)) << "from_heads";
    Tensor scale = randn({H}, 22), dscale = up(scale);
    for (bool with_scale : {false, true}) {
      Tensor hn = th.clone(), gn = up(th);
      cpu().l2norm_heads(hn, with_scale ? &scale : nullptr);
      gpu().l2norm_heads(gn, with_scale ? &dscale : nullptr);
      EXPECT_LT(nmse(down(gn), hn), kTol) << "l2norm_heads";
    }
    const int64_t P = L + 7;
    Tensor cs = randn({2, P, D / 2}, 23), dcs = up(cs);
    std::vector<int64_t> pos;
    for (int l = 0; l < L; ++l) pos.push_back((l * 5 + 3) % P);
    Tensor hr = th.clone(), gr = up(th);
    cpu().rope(hr, cs, pos);
    gpu().rope(gr, dcs, pos);
    EXPECT_LT(nmse(down(gr), hr), kTol) << "rope";
  }
}

TEST_F(CudaOps, AttentionOverSegmentsMatchesCpu) {
  struct Case {
    int R, H, Lq, D, cap, len, L2;
  };
  // head_dim 1..256 (every NC instantiation), tiles partially filled, an empty history, many queries
  for (Case c : {Case{1, 1, 1, 1, 1, 1, 1}, Case{2, 3, 5, 8, 11, 7, 4}, Case{2, 2, 17, 33, 70, 67, 31},
                 Case{1, 4, 100, 64, 300, 257, 100}, Case{2, 2, 9, 128, 40, 0, 9}, Case{1, 2, 33, 96, 65, 65, 1},
                 Case{1, 1, 20, 160, 50, 49, 20}, Case{1, 1, 16, 200, 33, 33, 16}, Case{1, 1, 7, 256, 64, 40, 7},
                 Case{2, 1, 40, 224, 20, 19, 40}}) {
    Tensor q = randn({c.R, c.H, c.Lq, c.D}, 24), k1 = randn({c.R, c.H, c.cap, c.D}, 25), v1 = randn({c.R, c.H, c.cap, c.D}, 26);
    Tensor k2 = randn({c.R, c.H, c.L2, c.D}, 27), v2 = randn({c.R, c.H, c.L2, c.D}, 28);
    Tensor dq = up(q), dk1 = up(k1), dv1 = up(v1), dk2 = up(k2), dv2 = up(v2);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.D));
    Tensor want = Tensor::empty({c.R, c.Lq, c.H * c.D}), got = gempty({c.R, c.Lq, c.H * c.D});
    cpu().attention(q, {{&k1, &v1, c.len, {}}, {&k2, &v2, c.L2, {}}}, scale, want);
    gpu().attention(dq, {{&dk1, &dv1, c.len, {}}, {&dk2, &dv2, c.L2, {}}}, scale, got);
    EXPECT_LT(nmse(down(got), want), 1e-9) << "D " << c.D << " Lq " << c.Lq;
    std::vector<int64_t> rl;  // variable-length rows (text)
    for (int r = 0; r < c.R; ++r) rl.push_back(std::max(0, c.cap - 13 * r - 1));
    cpu().attention(q, {{&k1, &v1, 0, rl}}, scale, want);
    gpu().attention(dq, {{&dk1, &dv1, 0, rl}}, scale, got);
    EXPECT_LT(nmse(down(got), want), 1e-9) << "row lengths, D " << c.D;
  }
}

// With half-precision weights the backend runs attention on tensor cores (bf16 Q/K/V, FP32 softmax and
// accumulation): the same answer within bf16 rounding.
TEST_F(CudaOps, TensorCoreAttentionMatchesCpuWithinBf16) {
  struct Case {
    int R, H, Lq, D, cap, len, L2;
  };
  struct Restore {
    Backend& b;
    ~Restore() { b.set_weight_dtype(DType::F32); }
  } restore{gpu()};
  gpu().set_weight_dtype(DType::BF16);
  for (Case c : {Case{1, 1, 1, 16, 1, 1, 1}, Case{2, 3, 5, 64, 11, 7, 4}, Case{2, 2, 100, 128, 300, 257, 100},
                 Case{1, 2, 65, 48, 64, 64, 63}, Case{2, 1, 130, 128, 40, 0, 130}}) {
    Tensor q = randn({c.R, c.H, c.Lq, c.D}, 90), k1 = randn({c.R, c.H, c.cap, c.D}, 91), v1 = randn({c.R, c.H, c.cap, c.D}, 92);
    Tensor k2 = randn({c.R, c.H, c.L2, c.D}, 93), v2 = randn({c.R, c.H, c.L2, c.D}, 94);
    Tensor dq = up(q), dk1 = up(k1), dv1 = up(v1), dk2 = up(k2), dv2 = up(v2);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.D));
    Tensor want = Tensor::empty({c.R, c.Lq, c.H * c.D}), got = gempty({c.R, c.Lq, c.H * c.D});
    cpu().attention(q, {{&k1, &v1, c.len, {}}, {&k2, &v2, c.L2, {}}}, scale, want);
    gpu().attention(dq, {{&dk1, &dv1, c.len, {}}, {&dk2, &dv2, c.L2, {}}}, scale, got);
    const double e = nmse(down(got), want);
    EXPECT_LT(e, 1e-4) << "D " << c.D << " Lq " << c.Lq;
    EXPECT_GT(e, 0.0) << "bf16 rounding must show: the tensor-core kernel did not run";
    std::vector<int64_t> rl;
    for (int r = 0; r < c.R; ++r) rl.push_back(std::max(0, c.cap - 13 * r - 1));
    cpu().attention(q, {{&k1, &v1, 0, rl}}, scale, want);
    gpu().attention(dq, {{&dk1, &dv1, 0, rl}}, scale, got);
    EXPECT_LT(nmse(down(got), want), 1e-4) << "row lengths, D " << c.D;
  }
}

TEST_F(CudaOps, KVMovesAreExact) {
  std::mt19937 g(5);
  for (DType dt : {DType::F32, DType::BF16}) {
    for (auto [R, H, D] : {std::tuple{1, 1, 1}, std::tuple{2, 3, 5}, std::tuple{2, 2, 128}, std::tuple{1, 4, 63}}) {
      const int64_t cap = 90, hist = 37, Lc = 41, n = 60;
      Tensor store = randn({R, H, cap, D}, 30), cur = randn({R, H, Lc, D}, 31);
      if (dt != DType::F32) {
        store = to_half(store, dt);
        cur = to_half(cur, dt);
      }
      Tensor dstore = up(store), dcur = up(cur);
      cpu().copy_tokens(cur, 20, store, 5);
      gpu().copy_tokens(dcur, 20, dstore, 5);
      EXPECT_TRUE(same_bits(down(dstore), store)) << "copy_tokens " << dtype_name(dt);
      std::vector<int32_t> kept;
      for (int64_t rh = 0; rh < R * H; ++rh) {
        std::vector<int32_t> all(hist + Lc);
        std::iota(all.begin(), all.end(), 0);
        std::shuffle(all.begin(), all.end(), g);
        all.resize(n);
        std::sort(all.begin(), all.end());
        kept.insert(kept.end(), all.begin(), all.end());
      }
      Tensor kt = Tensor::external(kept.data(), {R, H, n}, DType::I32);
      Tensor dkt = gpu().upload(kt, MemCategory::Workspace);
      cpu().gather_tokens(store, hist, cur, kt, n);
      gpu().gather_tokens(dstore, hist, dcur, dkt, n);
      EXPECT_TRUE(same_bits(down(dstore), store)) << "gather_tokens " << dtype_name(dt) << " D " << D;
    }
  }
}

TEST_F(CudaOps, Conv2dMatchesCpu) {
  for (int ks : {1, 3}) {
    for (int stride : {1, 2}) {
      for (auto [N, Ci, Co, H, W] : {std::tuple{1, 1, 1, 1, 1}, std::tuple{2, 3, 4, 5, 6}, std::tuple{1, 33, 17, 19, 23}}) {
        const int pad = ks / 2;
        Tensor x = randn({N, Ci, H, W}, 32), w = randn({Co, Ci, ks, ks}, 33, 0.2f), b = randn({Co}, 34);
        const int Ho = (H + 2 * pad - ks) / stride + 1, Wo = (W + 2 * pad - ks) / stride + 1;
        Tensor want = Tensor::empty({N, Co, Ho, Wo}), got = gempty({N, Co, Ho, Wo});
        Tensor dw = up(w), db = up(b);
        cpu().conv2d(x, w, &b, stride, pad, want);
        gpu().conv2d(up(x), dw, &db, stride, pad, got);
        EXPECT_LT(nmse(down(got), want), kTol) << "ks " << ks << " stride " << stride;
      }
    }
  }
}

TEST_F(CudaOps, GroupNormMatchesCpu) {
  for (auto [N, C, H, W] : {std::tuple{1, 32, 1, 1}, std::tuple{2, 64, 5, 3}, std::tuple{1, 96, 33, 17}}) {
    Tensor x = randn({N, C, H, W}, 35, 2.0f), w = randn({C}, 36), b = randn({C}, 37);
    Tensor want = Tensor::empty(x.shape()), got = gempty(x.shape());
    Tensor dw = up(w), db = up(b);
    cpu().group_norm(x, 32, &w, &b, 1e-6f, want);
    gpu().group_norm(up(x), 32, &dw, &db, 1e-6f, got);
    EXPECT_LT(nmse(down(got), want), kTol);
  }
}

TEST_F(CudaOps, InterpolationMatchesCpuInEveryMode) {
  Tensor x = randn({2, 3, 7, 5}, 38), dx = up(x);
  for (auto [Ho, Wo] : {std::pair{1, 1}, std::pair{3, 2}, std::pair{14, 11}, std::pair{7, 5}, std::pair{64, 64}}) {
    for (Interp m : {Interp::Nearest, Interp::Bilinear, Interp::Bicubic, Interp::Area}) {
      Tensor want = Tensor::empty({2, 3, Ho, Wo}), got = gempty({2, 3, Ho, Wo});
      cpu().interpolate(x, m, want);
      gpu().interpolate(dx, m, got);
      EXPECT_LT(nmse(down(got), want), kTol) << interp_name(m) << " " << Ho << "x" << Wo;
    }
  }
  Tensor x5 = randn({1, 4, 1, 64, 64}, 39), dx5 = up(x5);
  for (auto [Ho, Wo] : {std::pair{1, 1}, std::pair{20, 20}, std::pair{48, 33}}) {
    Tensor want = Tensor::empty({1, 4, 1, Ho, Wo}), got = gempty({1, 4, 1, Ho, Wo});
    cpu().interpolate(x5, Interp::Trilinear, want);
    gpu().interpolate(dx5, Interp::Trilinear, got);
    EXPECT_LT(nmse(down(got), want), kTol) << "trilinear " << Ho << "x" << Wo;
  }
}

TEST_F(CudaOps, KVSelectionKernelsMatchTheReference) {
  for (auto [R, H, D, cap, hist, side] : {std::tuple{2, 2, 128, 950, 921, 24}, std::tuple{1, 3, 64, 40, 0, 4},
                                          std::tuple{2, 1, 33, 300, 250, 5}}) {
    const int64_t Lc = static_cast<int64_t>(side) * side, total = hist + Lc;
    Tensor q = randn({R, H, Lc, D}, 40), hk = randn({R, H, cap, D}, 41), ck = randn({R, H, Lc, D}, 42);
    Tensor dq = up(q), dhk = up(hk), dck = up(ck);
    const std::vector<int32_t> win = scalekv_window(side, side);
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    for (WindowScore mode : {WindowScore::Raw, WindowScore::Softmax}) {
      Tensor want = Tensor::empty({R, H, total}), got = gempty({R, H, total});
      window_scores_ref(q, win, hk, hist, ck, scale, mode, want);
      cuda::window_scores(dq, win, dhk, hist, dck, scale, mode, got);
      EXPECT_LT(nmse(down(got), want), 1e-10) << "window_scores mode " << static_cast<int>(mode);
      for (WindowPool pool : {WindowPool::Max, WindowPool::Avg}) {
        if (mode == WindowScore::Raw && pool == WindowPool::Avg) continue;  // -inf window columns would spread
        Tensor pw = Tensor::empty(want.shape()), pg = gempty(want.shape());
        pool1d_ref(want, 5, pool, pw);
        cuda::pool1d(up(want), 5, pool, pg);
        EXPECT_LT(nmse(down(pg), pw), 1e-12) << "pool1d";
        // top-k on identical input (the reference's pooled), so ties are decided the same way
        std::vector<int32_t> cols;
        for (int32_t w : win) cols.push_back(static_cast<int32_t>(hist + w));
        const int64_t k = (total - static_cast<int64_t>(cols.size())) / 3;
        Tensor kw = Tensor::empty({R, H, k + static_cast<int64_t>(cols.size())}, DType::I32);
        Tensor kg = gempty(kw.shape(), DType::I32);
        topk_keep_ref(pw, cols, k, kw);
        cuda::topk_keep(up(pw), cols, k, kg);
        EXPECT_TRUE(same_bits(down(kg), kw)) << "topk_keep";
      }
    }
    // the composite, on quantised scores (many exact ties after max-pooling)
    Tensor kept = cuda::select(dq, win, dhk, hist, dck, scale, WindowScore::Raw, WindowPool::Max, 5, total / 2);
    EXPECT_EQ(kept.dim(2), total / 2);
    const std::vector<float> kv = down(kept).to_vector();
    for (int64_t rh = 0; rh < R * H; ++rh)
      for (int64_t j = 1; j < total / 2; ++j) ASSERT_LT(kv[rh * (total / 2) + j - 1], kv[rh * (total / 2) + j]);
  }
  Tensor ties = Tensor::empty({1, 2, 1000});
  for (int64_t i = 0; i < ties.numel(); ++i) ties.f32()[i] = static_cast<float>((i * 7919) % 5);
  const std::vector<int32_t> cols = {10, 11, 500};
  Tensor kw = Tensor::empty({1, 2, 403}, DType::I32), kg = gempty({1, 2, 403}, DType::I32);
  topk_keep_ref(ties, cols, 400, kw);
  cuda::topk_keep(up(ties), cols, 400, kg);
  EXPECT_TRUE(same_bits(down(kg), kw)) << "ties go to the lower index";
}

// ---- the scalekv branch's Backend ops (runtime/cuda/kv_select.h), against host loops of their semantics ----

TEST_F(CudaOps, GatherSlotsMatchesItsDefinition) {
  std::mt19937 g(9);
  for (bool shared : {false, true}) {
    const int64_t R = 2, H = 3, S = 50, D = 7, hist = 20, Lc = 15, n = 24;
    Tensor pool = randn({R, H, S, D}, 70), cur = randn({R, H, Lc, D}, 71);
    std::vector<int32_t> slot(static_cast<size_t>(S));  // a permutation: logical token -> pool row
    std::iota(slot.begin(), slot.end(), 0);
    std::shuffle(slot.begin(), slot.end(), g);
    std::vector<int32_t> kept;
    for (int64_t rh = 0; rh < (shared ? 1 : R * H); ++rh) {
      std::vector<int32_t> all(hist + Lc);
      std::iota(all.begin(), all.end(), 0);
      std::shuffle(all.begin(), all.end(), g);
      all.resize(n);
      std::sort(all.begin(), all.end());
      kept.insert(kept.end(), all.begin(), all.end());
    }
    Tensor want = pool.clone();
    for (int64_t rh = 0; rh < R * H; ++rh)  // sequential definition, j ascending
      for (int64_t j = 0; j < n; ++j) {
        const int64_t i = kept[(shared ? 0 : rh * n) + j];
        float* dst = want.f32() + (rh * S + slot[j]) * D;
        const float* src = i < hist ? want.f32() + (rh * S + slot[i]) * D : cur.f32() + (rh * Lc + i - hist) * D;
        std::copy(src, src + D, dst);
      }
    Tensor dpool = up(pool), dcur = up(cur);
    Tensor dslot = gpu().upload(Tensor::external(slot.data(), {S}, DType::I32), MemCategory::Workspace);
    Tensor dkept = gpu().upload(Tensor::external(kept.data(), {static_cast<int64_t>(kept.size())}, DType::I32),
                                MemCategory::Workspace);
    cuda::gather_slots(dpool, dslot, hist, dcur, dkept, n);
    EXPECT_TRUE(same_bits(down(dpool), want)) << (shared ? "shared kept" : "kept per (row, head)");
  }
}

TEST_F(CudaOps, QueryScoresAndAttentionMassMatchTheirDefinitions) {
  const int64_t R = 2, H = 2, Lq = 30, D = 64, L1 = 700, L2 = 30;
  Tensor q = randn({R, H, Lq, D}, 80, 0.3f), k1 = randn({R, H, 800, D}, 81), k2 = randn({R, H, L2, D}, 82);
  const std::vector<int64_t> q_idx = {3, 3, 29, 0, 17};
  const float scale = 0.125f;
  const int64_t L = L1 + L2, nq = static_cast<int64_t>(q_idx.size());
  // host logits [RH][nq][L]
  std::vector<double> logit(static_cast<size_t>(R * H * nq * L));
  for (int64_t rh = 0; rh < R * H; ++rh)
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t c = 0; c < L; ++c) {
        const float* qv = q.f32() + (rh * Lq + q_idx[i]) * D;
        const float* kv = c < L1 ? k1.f32() + (rh * 800 + c) * D : k2.f32() + (rh * L2 + c - L1) * D;
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += qv[d] * kv[d];
        logit[(rh * nq + i) * L + c] = scale * dot;
      }
  auto softmax = [&](int64_t rh, int64_t i, std::vector<double>& p) {
    const double* row = &logit[(rh * nq + i) * L];
    const double mx = *std::max_element(row, row + L);
    double z = 0;
    p.assign(row, row + L);
    for (double& v : p) z += (v = std::exp(v - mx));
    for (double& v : p) v /= z;
  };
  Tensor raw = Tensor::empty({R, H, L}), mean = Tensor::empty({R, H, L}), mass = Tensor::empty({R, H, 2});
  const int64_t n_hist = L1, topk = 50;
  std::vector<double> p;
  for (int64_t rh = 0; rh < R * H; ++rh) {
    double cur = 0, top = 0;
    for (int64_t c = 0; c < L; ++c) raw.f32()[rh * L + c] = mean.f32()[rh * L + c] = 0;
    for (int64_t i = 0; i < nq; ++i) {
      softmax(rh, i, p);
      for (int64_t c = 0; c < L; ++c) {
        raw.f32()[rh * L + c] += static_cast<float>(logit[(rh * nq + i) * L + c]);
        mean.f32()[rh * L + c] += static_cast<float>(p[c] / nq);
      }
      for (int64_t c = n_hist; c < L; ++c) cur += p[c];
      std::vector<double> h(p.begin(), p.begin() + n_hist);
      std::sort(h.begin(), h.end(), std::greater<double>());
      for (int64_t j = 0; j < topk; ++j) top += h[j];
    }
    mass.f32()[rh * 2] = static_cast<float>(cur / nq);
    mass.f32()[rh * 2 + 1] = static_cast<float>(top / nq);
  }
  Tensor dq = up(q), dk1 = up(k1), dk2 = up(k2);
  std::vector<KVSegment> segs{{&dk1, &dk1, L1, {}}, {&dk2, &dk2, L2, {}}};
  Tensor got = gempty({R, H, L}), gm = gempty({R, H, 2});
  cuda::query_scores(dq, q_idx, segs, scale, false, got);
  EXPECT_LT(nmse(down(got), raw), 1e-10) << "raw sum";
  cuda::query_scores(dq, q_idx, segs, scale, true, got);
  EXPECT_LT(nmse(down(got), mean), 1e-10) << "softmax mean";
  cuda::attention_mass(dq, q_idx, segs, n_hist, scale, topk, gm);
  EXPECT_LT(nmse(down(gm), mass), 1e-10) << "attention mass";
}

// The slot pool gives a layer one extent per scale when layers interleave (10 at VAR-d16's last scale,
// more at Infinity's 13 scales): attention and the selection statistics over 70 extents + the current
// scale, at head_dim 128, against the CPU over the same segments.
TEST_F(CudaOps, SeventyExtentsMatchCpu) {
  const int64_t R = 2, H = 2, Lq = 40, D = 128, S = 600;
  const auto ext = test::scattered_extents(70, S, 21);
  Tensor q = randn({R, H, Lq, D}, 90, 0.3f), pk = randn({R, H, S, D}, 91), pv = randn({R, H, S, D}, 92);
  Tensor ck = randn({R, H, Lq, D}, 93), cv = randn({R, H, Lq, D}, 94);
  Tensor dq = up(q), dpk = up(pk), dpv = up(pv), dck = up(ck), dcv = up(cv);
  std::vector<KVSegment> hs, ds;
  int64_t Lh = 0;
  for (const auto& [start, len] : ext) {
    hs.push_back({&pk, &pv, len, {}, start});
    ds.push_back({&dpk, &dpv, len, {}, start});
    Lh += len;
  }
  hs.push_back({&ck, &cv, Lq, {}, 0});
  ds.push_back({&dck, &dcv, Lq, {}, 0});
  Tensor want = Tensor::empty({R, Lq, H * D}), got = gempty({R, Lq, H * D});
  cpu().attention(q, hs, 0.088f, want);
  gpu().attention(dq, ds, 0.088f, got);
  EXPECT_LT(nmse(down(got), want), 1e-9) << "attention";
  const std::vector<int64_t> qi = {0, 5, 39};
  Tensor ws = Tensor::empty({R, H, Lh + Lq}), gs = gempty({R, H, Lh + Lq});
  cpu().window_scores(q, qi, hs, 0.088f, ScoreMode::SoftmaxMean, ws);
  gpu().window_scores(dq, qi, ds, 0.088f, ScoreMode::SoftmaxMean, gs);
  EXPECT_LT(nmse(down(gs), ws), 1e-9) << "window scores";
  Tensor wm = Tensor::empty({R, H, 2}), gm = gempty({R, H, 2});
  cpu().attention_mass(q, qi, hs, Lh, 0.088f, 9, wm);
  gpu().attention_mass(dq, qi, ds, Lh, 0.088f, 9, gm);
  EXPECT_LT(nmse(down(gm), wm), 1e-9) << "attention mass";
}

// KVSegment::start arrives with the scalekv branch; attention must honour it once it exists.
template <class S>
bool set_segment_start(S& s, int64_t v) {
  if constexpr (cuda::has_segment_start<S>::value) {
    s.start = v;
    return true;
  }
  return false;
}

TEST_F(CudaOps, AttentionHonoursSegmentStart) {
  KVSegment probe;
  if (!set_segment_start(probe, 0)) GTEST_SKIP() << "KVSegment has no `start` in this build (the scalekv branch adds it)";
  const int64_t R = 2, H = 2, Lq = 9, D = 32, cap = 60, start = 13, len = 30;
  Tensor q = randn({R, H, Lq, D}, 83), k = randn({R, H, cap, D}, 84), v = randn({R, H, cap, D}, 85);
  Tensor ks = Tensor::empty({R, H, len, D}), vs = Tensor::empty({R, H, len, D});  // the extent, copied out
  for (int64_t rh = 0; rh < R * H; ++rh) {
    std::copy_n(k.f32() + (rh * cap + start) * D, len * D, ks.f32() + rh * len * D);
    std::copy_n(v.f32() + (rh * cap + start) * D, len * D, vs.f32() + rh * len * D);
  }
  Tensor want = Tensor::empty({R, Lq, H * D}), got = gempty({R, Lq, H * D});
  cpu().attention(q, {{&ks, &vs, len, {}}}, 0.2f, want);
  Tensor dq = up(q), dk = up(k), dv = up(v);
  KVSegment seg{&dk, &dv, len, {}};
  set_segment_start(seg, start);
  gpu().attention(dq, {seg}, 0.2f, got);
  EXPECT_LT(nmse(down(got), want), 1e-10);
}

// A tiny VAR model end to end, teacher-forced with the CPU's tokens: logits per scale and the image.
TEST_F(CudaOps, TinyVarModelMatchesCpu) {
  const VarConfig c = test::tiny_var_config("tiny", 2, {1, 2, 3, 5});
  struct Logits final : GenerationObserver {
    std::map<int, Tensor> raw;
    void on_logits_raw(int si, const Tensor& l) override { raw[si] = l.clone(); }
  };
  auto run = [&](Backend& be, const std::vector<std::vector<int64_t>>* teacher, Logits* obs) {
    auto comm = make_local_communicator();
    WeightLoader wl(7, be), vl(8, be);
    VarModel model(c, wl, *comm);
    VQVAE vae(c, vl);
    VarRequest req;
    req.labels = {1, 4};
    req.sampling = {1, 0.0f};
    VarRunOptions opt;
    opt.teacher = teacher;
    opt.observer = obs;
    return var_generate(model, vae, req, opt);
  };
  Logits lc, lg;
  GenerateResult rc = run(cpu(), nullptr, &lc);
  GenerateResult rg = run(gpu(), &rc.tokens, &lg);
  for (int si = 0; si < 4; ++si) EXPECT_LT(nmse(lg.raw[si], lc.raw[si]), 1e-10) << "scale " << si;
  EXPECT_LT(nmse(rg.images, rc.images), 1e-10);
  GenerateResult free_run = run(gpu(), nullptr, nullptr);  // greedy: the same tokens without teacher
  EXPECT_EQ(free_run.tokens, rc.tokens);
}

TEST_F(CudaOps, ReferenceMeasurementsRun) {
  const cuda::DeviceInfo d = cuda::device_info();
  EXPECT_FALSE(d.name.empty());
  EXPECT_GT(d.hbm_peak_gbs, 0);
  EXPECT_GT(cuda::measure_copy_gbs(int64_t{64} << 20, 2), 0);
  EXPECT_GT(cuda::measure_gemm_tflops(DType::BF16, 1024, 2), 0);
  const cuda::AttnTiming t = cuda::measure_attention(2, 4, 64, 1000, 128, 3);
  EXPECT_GT(t.seconds, 0);
  EXPECT_GT(cuda::measure_attention(2, 4, 64, 1000, 128, 3, true).seconds, 0);
  cuda::profile_begin();
  Tensor x = randn({64, 64}, 50), w = randn({32, 64}, 51);
  Tensor dx = up(x), dw = up(w), y = gempty({64, 32});
  gpu().linear(dx, dw, nullptr, y);
  const auto ops = cuda::profile_end();
  ASSERT_EQ(ops.count("linear"), 1u);
  EXPECT_EQ(ops.at("linear").calls, 1);
  EXPECT_EQ(ops.at("linear").flops, 2.0 * 64 * 32 * 64);
}

// The benchmark report on this GPU: reference numbers and a profiled tiny generation.
TEST_F(CudaOps, BenchReportProfilesAGeneration) {
  CudaBenchReport r(DType::F32);
  r.profile("two linears", [&] {
    Tensor x = up(randn({256, 512}, 60)), w = up(randn({128, 512}, 61)), y = gempty({256, 128});
    gpu().linear(x, w, nullptr, y);
    gpu().linear(x, w, nullptr, y);
  });
  r.attention_sweep("tiny", 2, 2, 64, {{1, 10}, {16, 100}});
  const std::string md = r.markdown();
  EXPECT_NE(md.find("| two linears | linear | 2 |"), std::string::npos) << md;
  EXPECT_NE(md.find("Attention alone ("), std::string::npos) << md;
  EXPECT_NE(md.find("), tiny ("), std::string::npos) << md;
}

}  // namespace skv
