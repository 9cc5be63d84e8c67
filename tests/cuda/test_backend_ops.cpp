// Every Backend op on CUDA against the CPU backend (ggml's test-backend-ops): random inputs, several
// shapes per op including odd and degenerate sizes, compared by normalised squared error
// (sum (gpu - cpu)^2 / sum cpu^2) or exactly where the op only moves data. Then the ScaleKV selection
// kernels against their host reference, and a tiny VAR model end to end (teacher-forced logits and
// the decoded image). The last section runs the real shapes: attention over pool extents and Infinity's
// cosine logits on tensor cores, window scoring at ~6K and ~12K keys, slot maps of ~100 extents, GEMMs
// of 20K-70K rows, the banded conv2d of a 1024-wide decoder, large copies and the staging ring's wrap,
// and Infinity and ScaleKV (VAR and Infinity) end to end against the CPU's decisions.
// Without a visible GPU every test skips with the reason (GTEST_SKIP).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>
#include <random>
#include <tuple>

#include "engine/engine.h"
#include "engine/var_family.h"
#include "launcher/bench_cuda.h"
#include "parallel/communicator.h"
#include "runtime/backend.h"
#include "runtime/check.h"
#include "runtime/cuda/cuda_device.h"
#include "kvcache/selection.h"
#include "runtime/cuda/kv_select.h"
#include "runtime/hostdevice.h"
#include "kvcache/scalekv.h"
#include "kvcache/schedule.h"
#include "runtime/models/infinity_generate.h"
#include "runtime/models/var_generate.h"
#include "test_util.h"
#include "models/infinity_test_util.h"
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

// F32 copy of f with every value rounded to bf16 (what the tensor-core attention kernel reads).
Tensor round_bf16(const Tensor& f) {
  Tensor r = Tensor::empty(f.shape());
  for (int64_t i = 0; i < f.numel(); ++i) r.f32()[i] = bf16_to_f32(f32_to_bf16(f.f32()[i]));
  return r;
}

// Uniform in [-scale, scale) from xorshift64: inputs of tens of millions of values in milliseconds.
Tensor fast_uniform(const Shape& s, uint64_t seed, float scale = 1.0f) {
  Tensor t = Tensor::empty(s);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull | 1u;
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p[i] = scale * (static_cast<float>(x >> 40) * (2.0f / 16777216.0f) - 1.0f);
  }
  return t;
}

// n elements of dtype dt filled with random bytes (the copy tests compare bits, not values).
Tensor random_bits(int64_t n, DType dt, uint64_t seed) {
  Tensor t = Tensor::empty({n}, dt);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull | 1u;
  auto* p = static_cast<unsigned char*>(t.raw());
  for (size_t i = 0; i < t.nbytes(); ++i) {
    if (i % 8 == 0) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
    }
    p[i] = static_cast<unsigned char>(x >> (8 * (i % 8)));
  }
  return t;
}

// n distinct indices of [0, total), ascending (a kept set).
std::vector<int32_t> random_kept(int64_t total, int64_t n, std::mt19937& g) {
  std::vector<int32_t> all(static_cast<size_t>(total));
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), g);
  all.resize(static_cast<size_t>(n));
  std::sort(all.begin(), all.end());
  return all;
}

using Extents = std::vector<std::pair<int64_t, int64_t>>;  // {start, len} in a pool, in token order

// A store kept as extents (MultiScaleKVCache's layers): one chunk tensor [R, H, cap_e + pad_e, D] per extent,
// the extent a token range of it.
struct ExtentStore {
  std::vector<Tensor> t;
  std::vector<int64_t> start, len;
  std::vector<KVExtent> extents() {
    std::vector<KVExtent> e;
    for (size_t i = 0; i < t.size(); ++i) e.push_back({&t[i], start[i], len[i]});
    return e;
  }
};

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

// --device-memory reads the driver's figures on a GPU (engine/engine.cpp): free <= total, what scalekv holds
// is part of what the driver counts as used, and a new allocation lowers free by at least its size.
TEST_F(CudaOps, DeviceMemoryInfoCountsWhatTheAllocatorHolds) {
  int64_t free0 = 0, total = 0;
  ASSERT_TRUE(gpu().device_memory_info(&free0, &total));
  EXPECT_GT(total, 0);
  EXPECT_GT(free0, 0);
  EXPECT_LE(free0, total);
  EXPECT_GE(total - free0, gpu().allocator().stats().total_current);
  int64_t cpu_free = 0, cpu_total = 0;
  EXPECT_FALSE(cpu().device_memory_info(&cpu_free, &cpu_total));  // the CPU: the allocator alone
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
      // CPU: bf16 weights run oneDNN's bf16 kernel where the CPU has avx512_bf16 (activations rounded to
      // bf16, the contract of the GPU's tensor-core path); otherwise, and for f16, F32 activations.
      cpu().linear(x, w, &b, want);
      Tensor dw = up(w), db = up(b);
      gpu().linear(up(x), dw, &db, got);  // activations rounded to the weight dtype: ~2^-9 (bf16) relative
      const bool same_contract = dt == DType::BF16 && cpu().compute_dtype_supported(DType::BF16);
      EXPECT_LT(nmse(down(got), want), same_contract ? 1e-8 : dt == DType::BF16 ? 1e-4 : 1e-6) << dtype_name(dt);
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

// Every request of a packed step in one launch (attention_varlen) gives each job exactly what its own
// launch gives (the same kernel; only the block's job lookup differs), on the FP32 and the tensor-core
// kernels: jobs of different rows, query and key lengths, segment starts, per-row lengths, one without
// queries; and within FP32 summation order of the CPU's.
TEST_F(CudaOps, AttentionVarlenEqualsOneLaunchPerJob) {
  const int H = 3, D = 64;
  struct Spec {
    int R, Lq, cap, start, len, cur;
    bool row_len;
  };
  const std::vector<Spec> specs = {{2, 5, 11, 2, 7, 5, false}, {4, 1, 4, 0, 3, 1, false}, {2, 0, 6, 0, 6, 0, false},
                                   {2, 40, 30, 0, 30, 0, true}, {2, 130, 260, 10, 200, 64, false},
                                   {2, 4, 1, 0, 0, 4, false}};
  struct Restore {
    Backend& b;
    ~Restore() { b.set_weight_dtype(DType::F32); }
  } restore{gpu()};
  for (DType wd : {DType::F32, DType::BF16}) {  // BF16 weights: the tensor-core kernel
    gpu().set_weight_dtype(wd);
    std::vector<Tensor> q, k, v, ck, cv, dq, dk, dv, dck, dcv, want, one, got;
    for (size_t i = 0; i < specs.size(); ++i) {
      const Spec& c = specs[i];
      const uint32_t seed = 200 + 10 * static_cast<uint32_t>(i);
      q.push_back(randn({c.R, H, c.Lq, D}, seed));
      k.push_back(randn({c.R, H, c.cap, D}, seed + 1));
      v.push_back(randn({c.R, H, c.cap, D}, seed + 2));
      ck.push_back(randn({c.R, H, std::max(c.cur, 1), D}, seed + 3));
      cv.push_back(randn({c.R, H, std::max(c.cur, 1), D}, seed + 4));
      dq.push_back(up(q.back()));
      dk.push_back(up(k.back()));
      dv.push_back(up(v.back()));
      dck.push_back(up(ck.back()));
      dcv.push_back(up(cv.back()));
      want.push_back(Tensor::empty({c.R, c.Lq, H * D}));
      one.push_back(gempty({c.R, c.Lq, H * D}));
      got.push_back(gempty({c.R, c.Lq, H * D}));
    }
    std::vector<AttentionJob> jobs(specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      const Spec& c = specs[i];
      auto segs = [&](const Tensor& kk, const Tensor& vv, const Tensor& kc, const Tensor& vc) {
        std::vector<KVSegment> s = {c.row_len ? KVSegment{&kk, &vv, 0, {c.cap, c.cap / 3}, 0}
                                              : KVSegment{&kk, &vv, c.len, {}, c.start}};
        if (c.cur > 0) s.push_back({&kc, &vc, c.cur, {}});
        return s;
      };
      cpu().attention(q[i], segs(k[i], v[i], ck[i], cv[i]), 0.125f, want[i]);
      jobs[i].segs = segs(dk[i], dv[i], dck[i], dcv[i]);
      jobs[i].q = &dq[i];
      jobs[i].out = &got[i];
      gpu().attention(dq[i], jobs[i].segs, 0.125f, one[i]);
    }
    gpu().attention_varlen(jobs, 0.125f);
    for (size_t i = 0; i < specs.size(); ++i) {
      const Tensor g = down(got[i]), o = down(one[i]);
      EXPECT_EQ(std::memcmp(g.f32(), o.f32(), static_cast<size_t>(g.numel()) * sizeof(float)), 0)
          << "job " << i << (wd == DType::F32 ? " (FP32)" : " (tensor cores)");
      if (g.numel() > 0) EXPECT_LT(nmse(g, want[i]), wd == DType::F32 ? 1e-9 : 1e-4) << "job " << i;
    }
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

// The selection stage on the device (Backend::select_kept) against its host implementation, on identical
// scores so ties are decided the same way: the spec variants the policies use, quantised scores (many
// exact ties after max-pooling), a wide window, and the through-the-module path every policy takes.
TEST_F(CudaOps, SelectKeptMatchesTheHostSelection) {
  struct Case {
    int R, H;
    int64_t n;
    int every;   // one window column in `every`
    int levels;  // distinct score values (0: continuous)
  };
  for (const Case c : {Case{2, 2, 10500, 650, 0}, Case{1, 3, 57, 4, 5}, Case{2, 1, 1000, 3, 3}, Case{3, 4, 6000, 30, 7}}) {
    Tensor scores = randn({c.R, c.H, c.n}, 40);
    if (c.levels)
      for (int64_t i = 0; i < scores.numel(); ++i) scores.f32()[i] = std::floor(scores.f32()[i] * c.levels / 3.0f);
    std::vector<int64_t> window;
    for (int64_t col = c.every / 2; col < c.n && static_cast<int64_t>(window.size()) < kMaxKeepWindow; col += c.every)
      window.push_back(col);
    for (PoolKind pool : {PoolKind::Max, PoolKind::Avg})
      for (bool mask : {false, true})
        for (int64_t budget : {static_cast<int64_t>(window.size()), c.n / 3, c.n}) {
          if (budget < static_cast<int64_t>(window.size())) continue;
          const KeepSpec spec{.window = window, .mask_window_keys = mask, .pool = pool, .kernel = 5, .budget = budget};
          const Tensor want = select_kept(cpu(), scores, spec);
          const Tensor got = select_kept(gpu(), up(scores), spec);
          EXPECT_TRUE(same_bits(down(got), want)) << "n " << c.n << " budget " << budget << " mask " << mask << " pool "
                                                  << static_cast<int>(pool);
        }
  }
}

// ---- the scalekv branch's Backend ops (runtime/cuda/kv_select.h), against host loops of their semantics ----

TEST_F(CudaOps, GatherExtentsMatchesItsDefinition) {
  std::mt19937 g(9);
  for (bool shared : {false, true}) {
    const int64_t R = 2, H = 3, D = 7, hist = 20, Lc = 15, n = 24;
    const std::vector<int64_t> caps = {7, 13, 1, 20, 9};
    ExtentStore host, dev;
    std::vector<int64_t> first;
    int64_t cap = 0;
    for (size_t e = 0; e < caps.size(); ++e) {  // extent e: tokens [e, e + caps[e]) of a chunk of caps[e] + 2e
      host.t.push_back(randn({R, H, caps[e] + 2 * static_cast<int64_t>(e), D}, 70 + static_cast<uint32_t>(e)));
      dev.t.push_back(up(host.t.back()));
      for (ExtentStore* x : {&host, &dev}) {
        x->start.push_back(static_cast<int64_t>(e));
        x->len.push_back(caps[e]);
      }
      first.push_back(cap);
      cap += caps[e];
    }
    Tensor cur = randn({R, H, Lc, D}, 79);
    std::vector<int32_t> kept;
    for (int64_t rh = 0; rh < (shared ? 1 : R * H); ++rh) {
      const std::vector<int32_t> k = random_kept(hist + Lc, n, g);
      kept.insert(kept.end(), k.begin(), k.end());
    }
    // The definition on a flat copy of the store, j ascending.
    std::vector<float> flat(static_cast<size_t>(R * H * cap * D));
    auto at = [&](std::vector<Tensor>& t, int64_t rh, int64_t x) {
      size_t e = caps.size() - 1;
      while (first[e] > x) --e;
      return t[e].f32() + (rh * t[e].dim(2) + static_cast<int64_t>(e) + (x - first[e])) * D;
    };
    for (int64_t rh = 0; rh < R * H; ++rh)
      for (int64_t x = 0; x < cap; ++x) std::copy_n(at(host.t, rh, x), D, flat.data() + (rh * cap + x) * D);
    for (int64_t rh = 0; rh < R * H; ++rh)
      for (int64_t j = 0; j < n; ++j) {
        const int64_t i = kept[(shared ? 0 : rh * n) + j];
        const float* src = i < hist ? flat.data() + (rh * cap + i) * D : cur.f32() + (rh * Lc + i - hist) * D;
        std::copy_n(src, D, flat.data() + (rh * cap + j) * D);
      }
    Tensor dkept = gpu().upload(Tensor::external(kept.data(), {static_cast<int64_t>(kept.size())}, DType::I32),
                                MemCategory::Workspace);
    cuda::gather_extents(dev.extents(), hist, up(cur), dkept, 0, n);
    std::vector<Tensor> got;
    for (Tensor& d : dev.t) got.push_back(down(d));
    for (int64_t rh = 0; rh < R * H; ++rh)
      for (int64_t x = 0; x < cap; ++x)
        for (int64_t d = 0; d < D; ++d)
          ASSERT_EQ(at(got, rh, x)[d], flat[(rh * cap + x) * D + d]) << (shared ? "shared kept" : "kept per (row, head)")
                                                                     << " token " << x;
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

// A segment that starts inside its tensor (an extent of the slot pool): attention reads [start, start + len).
TEST_F(CudaOps, AttentionHonoursSegmentStart) {
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
  KVSegment seg{&dk, &dv, len, {}, start};
  gpu().attention(dq, {seg}, 0.2f, got);
  EXPECT_LT(nmse(down(got), want), 1e-10);
}

namespace {

// The raw logits of every scale of a generation (the model end-to-end tests compare them per scale).
class RawLogits final : public GenerationObserver {
 public:
  std::map<int, Tensor> raw;
  void on_logits_raw(int si, const Tensor& l) override { raw[si] = l.clone(); }
};

}  // namespace

// A tiny VAR model end to end, teacher-forced with the CPU's tokens: logits per scale and the image.
TEST_F(CudaOps, TinyVarModelMatchesCpu) {
  const VarConfig c = test::tiny_var_config("tiny", 2, {1, 2, 3, 5});
  auto run = [&](Backend& be, const std::vector<std::vector<int64_t>>* teacher, RawLogits* obs) {
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
  RawLogits lc, lg;
  GenerateResult rc = run(cpu(), nullptr, &lc);
  GenerateResult rg = run(gpu(), &rc.tokens, &lg);
  for (int si = 0; si < 4; ++si) EXPECT_LT(nmse(lg.raw[si], lc.raw[si]), 1e-10) << "scale " << si;
  EXPECT_LT(nmse(rg.images, rc.images), 1e-10);
  GenerateResult free_run = run(gpu(), nullptr, nullptr);  // greedy: the same tokens without teacher
  EXPECT_EQ(free_run.tokens, rc.tokens);
}

// The engine's packed, variable-length step on the GPU: three requests with three KV policies join a
// running batch at iterations 0, 1 and 3, so steps mix requests at different scales; each gets the CPU
// engine's tokens (greedy, so rounding cannot flip a sample) and images within one level.
TEST_F(CudaOps, EngineStepsOfRequestsAtDifferentScalesMatchCpu) {
  const VarConfig c = test::tiny_var_config("tiny", 2, {1, 2, 3, 4, 5, 6}, 1);
  auto kv = [](const std::string& policy, const std::string& budget) {
    KVOptions o;
    o.policy = policy;
    o.given = {"--kv-policy"};
    if (!budget.empty()) {
      o.budget = budget;
      o.window = 4;
      o.given.insert({"--kv-budget", "--kv-window"});
    }
    return o;
  };
  auto run = [&](Backend& be) {
    auto comm = make_local_communicator();
    WeightLoader wl(7, be), vl(8, be);
    VarModel model(c, wl, *comm);
    VQVAE vae(c, vl);
    VarFamily family(model, vae);
    std::vector<EngineRequest> reqs(3);
    const std::vector<KVOptions> pol = {kv("full", ""), kv("scalekv", "20"), kv("snapkv", "12")};
    for (int i = 0; i < 3; ++i) {
      reqs[i].id = i;
      reqs[i].labels = {i + 1, 4 - i};
      reqs[i].image_ids = {static_cast<uint32_t>(2 * i), static_cast<uint32_t>(2 * i + 1)};
      reqs[i].kv = pol[i];
    }
    EngineOptions o;
    o.limits.kv_cap_bytes = int64_t{1} << 40;
    Engine* engine = nullptr;
    o.on_boundary = [&](int64_t it) {
      if (it == 0) engine->submit(reqs[0]);
      if (it == 1) engine->submit(reqs[1]);
      if (it == 3) {
        engine->submit(reqs[2]);
        engine->close();
      }
    };
    Engine e(family, be, *comm, *comm, o);
    engine = &e;
    std::map<int64_t, EngineResult> got;
    e.run([&](EngineResult&& r) { got[r.id] = std::move(r); });
    EXPECT_EQ(e.stats().max_in_flight, 3);
    return got;
  };
  auto on_cpu = run(cpu());
  auto on_gpu = run(gpu());
  ASSERT_EQ(on_gpu.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(on_gpu[i].gen.tokens, on_cpu[i].gen.tokens) << "request " << i;
    ASSERT_EQ(on_gpu[i].rgb.size(), on_cpu[i].rgb.size());
    for (size_t k = 0; k < on_cpu[i].rgb.size(); ++k)
      for (size_t p = 0; p < on_cpu[i].rgb[k].size(); ++p)
        ASSERT_LE(std::abs(on_gpu[i].rgb[k][p] - on_cpu[i].rgb[k][p]), 1) << "request " << i << " image " << k;
  }
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

// ---- the real shapes (issue 13: attention over extents and cosine logits, window scoring at ~6K keys,
// slot maps as the cache builds them, GEMMs of tens of thousands of rows, the banded conv2d of a
// 1024-wide decoder, large copies and the staging ring, Infinity and ScaleKV end to end) -----------------

namespace {

// Restores the backend's weight dtype (attention takes tensor cores with half-precision weights).
struct WeightDtypeScope {
  Backend& b;
  DType saved;
  WeightDtypeScope(Backend& be, DType dt) : b(be), saved(be.weight_dtype()) { b.set_weight_dtype(dt); }
  ~WeightDtypeScope() { b.set_weight_dtype(saved); }
};

// Host and device views of the same segments: extents of a pool (start != 0) and the current scale.
struct SegLists {
  std::vector<KVSegment> host, dev;
  int64_t hist = 0;  // tokens in the pool extents
};
SegLists pool_segments(const Extents& ext, const Tensor& hk, const Tensor& hv, const Tensor& dk, const Tensor& dv) {
  SegLists s;
  for (const auto& [start, len] : ext) {
    s.host.push_back({&hk, &hv, len, {}, start});
    s.dev.push_back({&dk, &dv, len, {}, start});
    s.hist += len;
  }
  return s;
}

// Forwards to a policy and records what it kept at every compression, (scale, layer) -> [R*H*budget].
// With `teacher` (another run's record) the cache keeps the teacher's indices where the sizes agree, so
// one near-tie cannot derail the later scales; the inner policy's own choice is what gets recorded.
class KeptRecorder final : public KVPolicy {
 public:
  using Record = std::map<std::pair<int, int>, std::vector<int32_t>>;
  KeptRecorder(KVPolicy& inner, const Record* teacher) : inner_(inner), teacher_(teacher) {}
  Record kept;
  std::string name() const override { return inner_.name(); }
  int64_t budget(int layer, int scale, int64_t total) const override { return inner_.budget(layer, scale, total); }
  int64_t planned_budget(int layer, int scale, int64_t total) const override {
    return inner_.planned_budget(layer, scale, total);
  }
  QueryNeeds queries() const override { return inner_.queries(); }
  void observe(const CompressionInput& in) override { inner_.observe(in); }
  Tensor select(const CompressionInput& in, int64_t budget) override {
    Tensor out = inner_.select(in, budget);
    const std::vector<int32_t> mine = kept_on_host(*in.backend, out);
    kept[{in.scale, in.layer}] = mine;
    if (teacher_) {
      const auto it = teacher_->find({in.scale, in.layer});
      if (it != teacher_->end() && it->second.size() == mine.size())
        return kept_on_backend(*in.backend, it->second, in.rows, in.heads, budget);
    }
    return out;
  }
  void begin_request() override { inner_.begin_request(); }
  void begin_scale(int scale) override { inner_.begin_scale(scale); }
  void end_scale(int scale) override { inner_.end_scale(scale); }
  void set_communicator(Communicator* comm) override { inner_.set_communicator(comm); }

 private:
  KVPolicy& inner_;
  const Record* teacher_;
};

// One generation's decisions and logits, for comparing a CUDA run with the CPU's.
struct PolicyRun {
  GenerateResult result;
  RawLogits logits;
  KeptRecorder::Record kept;
  std::vector<int64_t> lengths;  // per scale: the summed store length after it
  std::vector<int> drafters;
  std::vector<double> asi;
};

void expect_same_decisions(const PolicyRun& g, const PolicyRun& c, double logit_tol) {
  EXPECT_FALSE(c.kept.empty()) << "the policy never compressed: the test does not exercise selection";
  EXPECT_EQ(g.lengths, c.lengths) << "store lengths per scale";
  EXPECT_EQ(g.drafters, c.drafters);
  ASSERT_EQ(g.asi.size(), c.asi.size());
  for (size_t i = 0; i < c.asi.size(); ++i) EXPECT_NEAR(g.asi[i], c.asi[i], 1e-5 * std::fabs(c.asi[i]) + 1e-9) << "ASI " << i;
  ASSERT_EQ(g.kept.size(), c.kept.size()) << "compressions";
  for (const auto& [key, want] : c.kept) {
    const auto it = g.kept.find(key);
    ASSERT_NE(it, g.kept.end()) << "scale " << key.first << " layer " << key.second;
    ASSERT_EQ(it->second.size(), want.size()) << "budget of scale " << key.first << " layer " << key.second;
    int64_t differ = 0;
    for (size_t j = 0; j < want.size(); ++j) differ += it->second[j] != want[j];
    EXPECT_EQ(differ, 0) << "kept indices of scale " << key.first << " layer " << key.second << " (" << want.size() << ")";
  }
  ASSERT_EQ(g.logits.raw.size(), c.logits.raw.size());
  for (const auto& [si, want] : c.logits.raw) EXPECT_LT(nmse(g.logits.raw.at(si), want), logit_tol) << "scale " << si;
}


}  // namespace

// Attention over the cache's extents (KVSegment::start != 0) on the tensor-core path, at head_dim 64 and
// 128: five history extents of one pool (lengths off the 64-key tile) and the current scale, queries off
// the 64-query block. Against the CPU on the same segments (bf16 rounding), and against the CPU fed the
// bf16-rounded inputs the kernel reads (scale * q, k, v), where only the bf16 probabilities differ.
TEST_F(CudaOps, TensorCoreAttentionOverPoolExtentsMatchesCpu) {
  WeightDtypeScope bf16(gpu(), DType::BF16);
  const Extents ext = {{37, 300}, {400, 129}, {700, 511}, {1300, 64}, {1499, 1}};
  const int64_t R = 2, H = 3, Lq = 150, S = 1500;
  for (int64_t D : {64, 128}) {
    Tensor q = randn({R, H, Lq, D}, 100), pk = randn({R, H, S, D}, 101), pv = randn({R, H, S, D}, 102);
    Tensor ck = randn({R, H, Lq, D}, 103), cv = randn({R, H, Lq, D}, 104);
    Tensor dq = up(q), dpk = up(pk), dpv = up(pv), dck = up(ck), dcv = up(cv);
    SegLists s = pool_segments(ext, pk, pv, dpk, dpv);
    s.host.push_back({&ck, &cv, Lq, {}, 0});
    s.dev.push_back({&dck, &dcv, Lq, {}, 0});
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    Tensor want = Tensor::empty({R, Lq, H * D}), got = gempty({R, Lq, H * D});
    cpu().attention(q, s.host, scale, want);
    gpu().attention(dq, s.dev, scale, got);
    const Tensor g = down(got);
    const double e = nmse(g, want);
    EXPECT_LT(e, 1e-4) << "D " << D;
    EXPECT_GT(e, 0.0) << "bf16 rounding must show: the tensor-core kernel did not run";
    // The CPU reference honours start: the same extents copied out contiguously give the same answer.
    Tensor kc = test::gather_extents(pk, ext), vc = test::gather_extents(pv, ext);
    Tensor contiguous = Tensor::empty(want.shape());
    cpu().attention(q, {{&kc, &vc, s.hist, {}}, {&ck, &cv, Lq, {}}}, scale, contiguous);
    EXPECT_LT(nmse(contiguous, want), 1e-12) << "D " << D;
    // The inputs as the kernel rounds them: then only P (bf16, relative 2^-8) differs: nmse ~3e-6.
    Tensor qs = q.clone();
    cpu().scale(qs, scale);
    Tensor qr = round_bf16(qs), pkr = round_bf16(pk), pvr = round_bf16(pv), ckr = round_bf16(ck), cvr = round_bf16(cv);
    SegLists r = pool_segments(ext, pkr, pvr, pkr, pvr);
    r.host.push_back({&ckr, &cvr, Lq, {}, 0});
    Tensor rounded = Tensor::empty(want.shape());
    cpu().attention(qr, r.host, 1.0f, rounded);
    EXPECT_LT(nmse(g, rounded), 1e-5) << "D " << D;
  }
}

// Infinity's cosine attention on the bf16 (tensor-core) path: q l2-normalised times the per-head scale
// exp(min(scale_mul, log 100)) (100, 100, 30, 1), k l2-normalised, attention scale 1, so logits are
// cosines times up to 100. Keys near +-q make them reach +-100 (image tokens attend to themselves and
// their neighbours that sharply). At head_dim 128 over three extents + the current scale.
// Tolerance: bf16 rounding of q and k moves a logit by about 100 * 2^-8 * sqrt(2 / 128) ~ 0.05; the test
// measures what that does on the CPU (inputs rounded as the kernel rounds them, e_in) and allows the GPU
// twice that plus the probabilities' rounding. The F32 kernel on the same logits must stay at FP32.
TEST_F(CudaOps, CosineAttentionLogitsUpTo100OnTensorCores) {
  const int64_t R = 2, H = 4, D = 128, Lq = 256, S = 1200;  // Lq: a 16x16 scale
  const Extents ext = {{5, 200}, {300, 333}, {800, 300}};
  const float sm[H] = {std::log(100.0f) + 2.0f, std::log(100.0f), std::log(30.0f), 0.0f};
  Tensor head_scale = Tensor::empty({H});
  for (int64_t h = 0; h < H; ++h) head_scale.f32()[h] = std::exp(std::fmin(sm[h], std::log(100.0f)));
  Tensor q = randn({R, H, Lq, D}, 110), pk = randn({R, H, S, D}, 111), pv = randn({R, H, S, D}, 112);
  Tensor ck = randn({R, H, Lq, D}, 113, 0.25f), cv = randn({R, H, Lq, D}, 114);
  for (int64_t rh = 0; rh < R * H; ++rh)
    for (int64_t t = 0; t < Lq; ++t) {
      const float* qt = q.f32() + (rh * Lq + t) * D;
      float* kt = ck.f32() + (rh * Lq + t) * D;  // current key t ~ query t: logit ~ +scale
      for (int64_t d = 0; d < D; ++d) kt[d] += qt[d];
      if (t % 4 == 0) {  // a history key ~ -(query t): logit ~ -scale
        float* kh = pk.f32() + (rh * S + ext[1].first + t) * D;
        for (int64_t d = 0; d < D; ++d) kh[d] = -qt[d] + 0.1f * kh[d];
      }
    }
  cpu().l2norm_heads(q, &head_scale);
  cpu().l2norm_heads(pk, nullptr);
  cpu().l2norm_heads(ck, nullptr);
  double lo = 0, hi = 0;  // the logits of (row 0, head 0: scale 100) reach both ends
  for (int64_t t = 0; t < Lq; ++t) {
    auto dot = [&](const float* k) {
      double s = 0;
      for (int64_t d = 0; d < D; ++d) s += static_cast<double>(q.f32()[t * D + d]) * k[d];
      return s;
    };
    hi = std::max(hi, dot(ck.f32() + t * D));
    if (t % 4 == 0) lo = std::min(lo, dot(pk.f32() + (ext[1].first + t) * D));
  }
  EXPECT_GT(hi, 95.0);
  EXPECT_LT(lo, -95.0);
  Tensor dq = up(q), dpk = up(pk), dpv = up(pv), dck = up(ck), dcv = up(cv);
  SegLists s = pool_segments(ext, pk, pv, dpk, dpv);
  s.host.push_back({&ck, &cv, Lq, {}, 0});
  s.dev.push_back({&dck, &dcv, Lq, {}, 0});
  Tensor want = Tensor::empty({R, Lq, H * D}), got = gempty({R, Lq, H * D});
  cpu().attention(q, s.host, 1.0f, want);
  {
    WeightDtypeScope f32(gpu(), DType::F32);
    gpu().attention(dq, s.dev, 1.0f, got);  // F32 weights: the FP32 kernel
    EXPECT_LT(nmse(down(got), want), 1e-8) << "FP32 kernel, logits up to 100";
  }
  Tensor qr = round_bf16(q), pkr = round_bf16(pk), pvr = round_bf16(pv), ckr = round_bf16(ck), cvr = round_bf16(cv);
  SegLists r = pool_segments(ext, pkr, pvr, pkr, pvr);
  r.host.push_back({&ckr, &cvr, Lq, {}, 0});
  Tensor rounded = Tensor::empty(want.shape());
  cpu().attention(qr, r.host, 1.0f, rounded);
  const double e_in = nmse(rounded, want);
  EXPECT_LT(e_in, 1e-3) << "bf16 inputs are not good enough for these logits";
  WeightDtypeScope bf16(gpu(), DType::BF16);
  gpu().attention(dq, s.dev, 1.0f, got);
  const Tensor g = down(got);
  const double e = nmse(g, want);
  EXPECT_GT(e, 0.0) << "bf16 rounding must show: the tensor-core kernel did not run";
  EXPECT_LT(e, 2 * e_in + 1e-5) << "against the exact CPU (e_in " << e_in << ")";
  EXPECT_LT(nmse(g, rounded), 1e-5) << "against the CPU on the rounded inputs";
}

// ScaleKV's scoring at the real shape: head_dim 128, the 16 grid queries of the released window, ~6K keys
// (three pool extents + a 40x40 current scale), both score modes and the ASI statistics; then ~12K keys,
// where the query kernel's dynamic shared memory is just under 48 KiB and only its static arrays push
// it over (the band issue 13 item 7 found).
TEST_F(CudaOps, WindowScoresAtTheRealShapeMatchCpu) {
  struct Case {
    int64_t side;
    Extents ext;
    int64_t S;
    bool all_modes;
  };
  for (const Case& c : {Case{40, {{64, 1500}, {1700, 1400}, {3300, 1700}}, 5100, true},
                        Case{48, {{10, 3000}, {3100, 2900}, {6100, 2500}, {8700, 1300}}, 10100, false}}) {
    const int64_t R = 2, H = 4, D = 128, Lc = c.side * c.side;
    Tensor q = randn({R, H, Lc, D}, 120), pk = randn({R, H, c.S, D}, 121), ck = randn({R, H, Lc, D}, 122);
    Tensor dq = up(q), dpk = up(pk), dck = up(ck);
    SegLists s = pool_segments(c.ext, pk, pk, dpk, dpk);
    s.host.push_back({&ck, &ck, Lc, {}, 0});
    s.dev.push_back({&dck, &dck, Lc, {}, 0});
    const int64_t L = s.hist + Lc;
    std::vector<int64_t> qi;
    qi = scalekv_reference_window(Lc, Lc).query_idx;
    ASSERT_EQ(qi.size(), 16u);
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    for (ScoreMode mode : {ScoreMode::SoftmaxMean, ScoreMode::RawSum}) {
      if (!c.all_modes && mode == ScoreMode::RawSum) continue;
      Tensor want = Tensor::empty({R, H, L}), got = gempty({R, H, L});
      cpu().window_scores(q, qi, s.host, scale, mode, want);
      gpu().window_scores(dq, qi, s.dev, scale, mode, got);
      EXPECT_LT(nmse(down(got), want), 1e-9) << L << " keys, mode " << static_cast<int>(mode);
    }
    if (!c.all_modes) continue;
    Tensor wm = Tensor::empty({R, H, 2}), gm = gempty({R, H, 2});
    cpu().attention_mass(q, qi, s.host, s.hist, scale, 16, wm);
    gpu().attention_mass(dq, qi, s.dev, s.hist, scale, 16, gm);
    EXPECT_LT(nmse(down(gm), wm), 1e-9) << "attention mass, " << L << " keys";
  }
}

// gather_extents as the cache moves a store: a layer of 40 extents of assorted sizes (a full cache of a
// 13-scale schedule has a dozen; online budgets add more), then the three moves MultiScaleKVCache makes:
// append (the scale's tokens into a new extent, one shared identity list, first = the old length),
// compaction that grows the layer (kept per (row, head), a new extent), and compaction that shrinks it
// (one kept list shared by every (row, head)). head_dim 128 in F32 and bf16, and 63 in bf16 (126-byte
// tokens: the byte-wise copy). Bit-exact against the CPU after each move.
TEST_F(CudaOps, GatherExtentsAsTheCacheMovesMatchCpu) {
  for (auto [dt, D] : {std::pair{DType::F32, int64_t{128}}, std::pair{DType::BF16, int64_t{128}},
                       std::pair{DType::BF16, int64_t{63}}}) {
    const int64_t R = 2, H = 4;
    std::mt19937 g(131);
    auto make = [&](const Shape& s, uint32_t seed) { return dt == DType::F32 ? randn(s, seed) : to_half(randn(s, seed), dt); };
    ExtentStore host, dev;
    int64_t len = 0;
    auto add_extent = [&](int64_t cap, uint32_t seed) {  // tokens [3, 3 + cap) of a chunk of cap + 5
      host.t.push_back(make({R, H, cap + 5, D}, seed));
      dev.t.push_back(up(host.t.back()));
      for (ExtentStore* x : {&host, &dev}) {
        x->start.push_back(3);
        x->len.push_back(cap);
      }
      len += cap;
    };
    for (int e = 0; e < 40; ++e) add_extent(1 + (e * 37) % 61, 200 + e);
    auto step = [&](int64_t hist, const Tensor& cur, std::vector<int32_t> kept, const Shape& kept_shape, int64_t first,
                    int64_t n, const char* what) {
      Tensor hk = Tensor::external(kept.data(), kept_shape, DType::I32);
      cpu().gather_extents(host.extents(), hist, cur, hk, first, n);
      gpu().gather_extents(dev.extents(), hist, up(cur), gpu().upload(hk, MemCategory::Workspace), first, n);
      for (size_t e = 0; e < host.t.size(); ++e)
        EXPECT_TRUE(same_bits(down(dev.t[e]), host.t[e])) << what << ", extent " << e << ", " << dtype_name(dt) << " D " << D;
    };
    {  // append 150 tokens into a new extent
      const int64_t Lc = 150, old = len;
      add_extent(Lc, 133);
      std::vector<int32_t> idx(static_cast<size_t>(len));
      std::iota(idx.begin(), idx.end(), 0);
      step(old, make({R, H, Lc, D}, 134), idx, {len}, old, len, "append");
    }
    {  // compact to more tokens than the store held: kept per (row, head) out of [store + 200 current]
      const int64_t Lc = 200, old = len, n = len + 80;
      add_extent(80, 135);
      std::vector<int32_t> kept;
      for (int64_t rh = 0; rh < R * H; ++rh) {
        const std::vector<int32_t> k = random_kept(old + Lc, n, g);
        kept.insert(kept.end(), k.begin(), k.end());
      }
      step(old, make({R, H, Lc, D}, 136), kept, {R, H, n}, 0, n, "compact (grow)");
    }
    {  // compact to fewer: one kept list for every (row, head)
      const int64_t Lc = 64, n = 120, old = len;
      step(old, make({R, H, Lc, D}, 137), random_kept(old + Lc, n, g), {n}, 0, n, "compact (shrink)");
    }
  }
}

// GEMMs with M in the tens of thousands (Infinity at 1024x1024: 4096 tokens x 2 CFG rows x batch), and
// M = 70000 (past 65535, a grid dimension's limit). F32 weights against the CPU at FP32; bf16 and f16
// weights against the CPU with the same half weights (activations rounded: ~1e-5), and against the CPU
// fed the activations rounded as the GPU rounds them (then only the summation order differs).
TEST_F(CudaOps, LinearWithTensOfThousandsOfRowsMatchesCpu) {
  for (auto [M, K, N] : {std::tuple{20000, 256, 512}, std::tuple{70000, 64, 48}}) {
    Tensor x = fast_uniform({M, K}, 140), w = randn({N, K}, 141, 0.1f), b = randn({N}, 142);
    Tensor dx = up(x), dw = up(w), db = up(b);
    Tensor want = Tensor::empty({M, N}), got = gempty({M, N});
    cpu().linear(x, w, &b, want);
    gpu().linear(dx, dw, &db, got);
    EXPECT_LT(nmse(down(got), want), kTol) << "F32 " << M << "x" << K << "x" << N;
  }
  const int64_t M = 20000, K = 256, N = 512;
  Tensor x = fast_uniform({M, K}, 143), b = randn({N}, 144), dx = up(x), db = up(b);
  for (DType dt : {DType::BF16, DType::F16}) {
    Tensor w = to_half(randn({N, K}, 145, 0.1f), dt), dw = up(w);
    Tensor want = Tensor::empty({M, N}), got = gempty({M, N});
    cpu().linear(x, w, &b, want);
    gpu().linear(dx, dw, &db, got);
    const Tensor g = down(got);
    EXPECT_LT(nmse(g, want), dt == DType::BF16 ? 1e-4 : 1e-6) << dtype_name(dt);
    Tensor xr = to_half(x, dt).to_f32();
    cpu().linear(xr, w, &b, want);
    EXPECT_LT(nmse(g, want), 1e-9) << dtype_name(dt) << " with the activations rounded as on the GPU";
  }
}

// conv2d builds im2col for a band of output rows at a time (at most 64 Mi floats of columns,
// runtime/cuda/image.cu): the 1024-wide decoder's conv_out (128 -> 3 channels, 3x3) takes 56-row bands,
// here 3 of them (56, 56, 16); a 256-channel 512-wide layer takes 56-row bands, 2 per image (56, 8), over
// two images that reuse the column buffer.
TEST_F(CudaOps, Conv2dMultiBandIm2colMatchesCpu) {
  for (auto [N, Ci, Co, H, W] : {std::tuple{1, 128, 3, 128, 1024}, std::tuple{2, 256, 16, 64, 512}}) {
    const int64_t Kc = static_cast<int64_t>(Ci) * 9, band = (int64_t{64} << 20) / (Kc * W);
    EXPECT_GT(H, band) << "one band: the shape no longer tests the banded path";
    Tensor x = fast_uniform({N, Ci, H, W}, 150), w = randn({Co, Ci, 3, 3}, 151, 0.03f), b = randn({Co}, 152);
    Tensor want = Tensor::empty({N, Co, H, W}), got = gempty({N, Co, H, W});
    Tensor dw = up(w), db = up(b);
    cpu().conv2d(x, w, &b, 1, 1, want);
    gpu().conv2d(up(x), dw, &db, 1, 1, got);
    EXPECT_LT(nmse(down(got), want), kTol) << N << "x" << Ci << "x" << H << "x" << W << " -> " << Co;
  }
}

// Host -> device copies: exactly 4 MiB (the largest through the pinned staging ring), just over it and
// 64 MiB (straight from pageable memory), odd byte counts; the host buffer is overwritten as soon as the
// upload returns (it must already have been read). Then ~80 MiB of small uploads, so the 16 MiB ring
// wraps several times, each also copied on the device at once, with pageable ones in between; every value
// of every upload and copy is checked after the last wrap.
TEST_F(CudaOps, LargeUploadsAndTheStagingRingWrap) {
  uint64_t seed = 160;
  for (auto [n, dt] : {std::pair{int64_t{1} << 20, DType::F32}, std::pair{(int64_t{1} << 20) + 1, DType::F32},
                       std::pair{(int64_t{5} << 19) + 1, DType::BF16}, std::pair{(int64_t{64} << 20) + 3, DType::U8},
                       std::pair{int64_t{16} << 20, DType::F32}}) {
    Tensor h = random_bits(n, dt, ++seed), keep = h.clone();
    Tensor d = gpu().upload(h, MemCategory::Activations);
    std::memset(h.raw(), 0xA5, h.nbytes());
    const Tensor back = down(d);
    EXPECT_TRUE(same_bits(back, keep)) << h.nbytes() << " bytes";
    Tensor e = gpu().empty(d.shape(), dt);
    gpu().copy(d, e);
    EXPECT_TRUE(same_bits(down(e), keep)) << h.nbytes() << " bytes, device copy";
  }
  std::mt19937 g(170);
  std::vector<Tensor> host, dev, copies;
  int64_t total = 0;
  for (int i = 0; total < (int64_t{80} << 20); ++i) {
    const DType dt = i % 3 == 0 ? DType::U8 : (i % 3 == 1 ? DType::BF16 : DType::F32);
    int64_t n = 1 + static_cast<int64_t>(g() % 20000);     // up to ~80 KB
    if (i % 211 == 0) n = (int64_t{3} << 20) / static_cast<int64_t>(dtype_size(dt)) + 7;  // ~3 MiB: most of a ring quarter
    if (i % 499 == 0) n = (int64_t{5} << 20) + 1;            // > 4 MiB: pageable, between ring copies
    Tensor h = random_bits(n, dt, ++seed);
    host.push_back(h.clone());
    dev.push_back(gpu().upload(h, MemCategory::Workspace));
    std::memset(h.raw(), 0x5A, h.nbytes());
    Tensor e = gpu().empty(dev.back().shape(), dt);
    gpu().copy(dev.back(), e);  // consumed on the stream right away, before the ring comes round
    copies.push_back(e);
    total += static_cast<int64_t>(h.nbytes());
  }
  EXPECT_GT(host.size(), 1000u);
  for (size_t i = 0; i < host.size(); ++i) {
    ASSERT_TRUE(same_bits(down(dev[i]), host[i])) << "upload " << i << " of " << host.size() << " (" << host[i].nbytes() << " bytes)";
    ASSERT_TRUE(same_bits(down(copies[i]), host[i])) << "device copy " << i;
  }
}

// A tiny Infinity model end to end (cosine attention with per-head scales, text cross-attention with two
// prompt lengths, the bit-wise sampler, the BSQ-VAE decoder), teacher-forced with the CPU's bits: raw
// logits per scale and the image.
TEST_F(CudaOps, TinyInfinityModelMatchesCpu) {
  const InfinityConfig cfg = test::tiny_infinity_config();
  const InfinityRequest req = test::tiny_infinity_request(cfg);
  auto run = [&](Backend& be, const std::vector<std::vector<uint8_t>>* teacher, RawLogits* obs) {
    auto comm = make_local_communicator();
    WeightLoader wm(12, be), wv(13, be);
    InfinityModel model(cfg, wm, *comm);
    BsqVae vae(cfg, wv);
    InfinityRunOptions o;
    o.teacher = teacher;
    o.observer = obs;
    return infinity_generate(model, vae, req, o);
  };
  RawLogits lc, lg;
  const GenerateResult rc = run(cpu(), nullptr, &lc);
  std::vector<std::vector<uint8_t>> bits;
  for (const auto& s : rc.tokens) bits.emplace_back(s.begin(), s.end());
  const GenerateResult rg = run(gpu(), &bits, &lg);
  ASSERT_EQ(lg.raw.size(), lc.raw.size());
  ASSERT_EQ(static_cast<int>(lc.raw.size()), req.schedule.num_scales());
  for (const auto& [si, want] : lc.raw) EXPECT_LT(nmse(lg.raw.at(si), want), 1e-9) << "scale " << si;
  EXPECT_EQ(rg.tokens, rc.tokens);  // teacher-forced
  EXPECT_LT(nmse(rg.images, rc.images), 1e-9);
}

// ScaleKV end to end on a tiny VAR (the released scoring: raw queries, summed logits, max pooling): append,
// window scores on the device, host top-k, compaction through the slot map, online calibration's attention
// mass. Teacher-forced with the CPU's tokens and kept sets; the CUDA run must make the same decisions:
// the same drafters, the same kept indices at every compression, the same store lengths, close logits.
TEST_F(CudaOps, ScaleKVTinyVarMatchesCpu) {
  const VarConfig c = test::tiny_var_config("skv", 3, {1, 2, 3, 4, 6, 8}, 1);
  auto run = [&](Backend& be, const PolicyRun* teacher) {
    auto comm = make_local_communicator();
    VarModel model(c, WeightLoader(9, be), *comm);
    VQVAE vae(c, WeightLoader(10, be));
    auto p = test::make_test_policy("scalekv", 20, c);  // of 66 cached tokens
    KeptRecorder rec(*p, teacher ? &teacher->kept : nullptr);
    PolicyRun out;
    VarRequest req;
    req.labels = {1, 4};
    VarRunOptions opt;
    opt.policy = &rec;
    opt.observer = &out.logits;
    opt.teacher = teacher ? &teacher->result.tokens : nullptr;
    opt.decode = false;
    out.result = var_generate(model, vae, req, opt);
    out.kept = rec.kept;
    for (const auto& t : out.result.timings) out.lengths.push_back(t.kv_store_tokens);
    auto* s = static_cast<ScaleKVPolicy*>(p.get());
    out.drafters = s->drafters();
    out.asi = s->online_asi();
    return out;
  };
  const PolicyRun cr = run(cpu(), nullptr);
  ASSERT_EQ(cr.lengths.size(), 6u);
  EXPECT_LT(cr.lengths[4], 3 * 66) << "ScaleKV kept everything: nothing was compacted";
  EXPECT_EQ(cr.drafters.size(), 1u);
  const PolicyRun gr = run(gpu(), &cr);
  expect_same_decisions(gr, cr, 1e-9);
  EXPECT_EQ(gr.result.tokens, cr.result.tokens);
}

// ScaleKV on a tiny Infinity with the paper's scoring (the attention's own queries, softmax mean over the
// 4x4 grid, average pooling): the device SoftmaxMean path, cosine-attention queries, two text lengths.
TEST_F(CudaOps, ScaleKVTinyInfinityMatchesCpu) {
  const InfinityConfig cfg = test::tiny_infinity_config();
  const InfinityRequest req = test::tiny_infinity_request(cfg);
  auto run = [&](Backend& be, const PolicyRun* teacher) {
    auto comm = make_local_communicator();
    WeightLoader wm(12, be), wv(13, be);
    InfinityModel model(cfg, wm, *comm);
    BsqVae vae(cfg, wv);
    ScaleKVOptions o;
    o.budget = 40;
    o.drafters_per_scale = 1;
    o.scoring = ScaleKVScoring::Paper;
    ScaleKVPolicy p(o, cfg.depth, req.schedule);
    KeptRecorder rec(p, teacher ? &teacher->kept : nullptr);
    PolicyRun out;
    std::vector<std::vector<uint8_t>> bits;
    if (teacher)
      for (const auto& s : teacher->result.tokens) bits.emplace_back(s.begin(), s.end());
    InfinityRunOptions opt;
    opt.policy = &rec;
    opt.observer = &out.logits;
    opt.teacher = teacher ? &bits : nullptr;
    opt.decode = false;
    out.result = infinity_generate(model, vae, req, opt);
    out.kept = rec.kept;
    for (const auto& t : out.result.timings) out.lengths.push_back(t.kv_store_tokens);
    out.drafters = p.drafters();
    out.asi = p.online_asi();
    return out;
  };
  const PolicyRun cr = run(cpu(), nullptr);
  EXPECT_EQ(cr.drafters.size(), 1u);
  const PolicyRun gr = run(gpu(), &cr);
  expect_same_decisions(gr, cr, 1e-9);
  EXPECT_EQ(gr.result.tokens, cr.result.tokens);
}

}  // namespace skv
