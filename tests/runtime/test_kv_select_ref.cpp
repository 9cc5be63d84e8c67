// The host reference of window scoring / pooling / top-k-keep (runtime/kv_select_ref.h) against
// hand-made cases and against every compression record of the official ScaleKV run in the
// infinity-tiny golden (pooled from scores, kept from pooled, the window positions).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "runtime/check.h"
#include "runtime/kv_select_ref.h"
#include "runtime/safetensors.h"
#include "test_util.h"

#ifndef SKV_GOLDEN_DIR_DEFAULT
#define SKV_GOLDEN_DIR_DEFAULT "../shared/golden"
#endif

namespace skv {

namespace {

std::string golden_file(const std::string& name) {
  const char* env = std::getenv("SKV_GOLDEN_DIR");
  return std::string(env ? env : SKV_GOLDEN_DIR_DEFAULT) + "/" + name;
}

Tensor host_i32(const Tensor& i64) {
  Tensor t = Tensor::empty(i64.shape(), DType::I32);
  for (int64_t i = 0; i < i64.numel(); ++i) t.data<int32_t>()[i] = static_cast<int32_t>(i64.data<int64_t>()[i]);
  return t;
}

}  // namespace

TEST(KVSelectRef, RawScoresMaskTheWindowAndSumTheQueries) {
  const int R = 1, H = 2, Lc = 5, D = 3, cap = 4, hist = 3;
  Tensor q = test::randn({R, H, Lc, D}, 1), hk = test::randn({R, H, cap, D}, 2), ck = test::randn({R, H, Lc, D}, 3);
  const std::vector<int32_t> win = {1, 4};
  Tensor s = Tensor::empty({R, H, hist + Lc});
  window_scores_ref(q, win, hk, hist, ck, 0.5f, WindowScore::Raw, s);
  for (int h = 0; h < H; ++h)
    for (int c = 0; c < hist + Lc; ++c) {
      const float got = s.f32()[h * (hist + Lc) + c];
      if (c == hist + 1 || c == hist + 4) {
        EXPECT_EQ(got, -INFINITY);
        continue;
      }
      const float* k = c < hist ? hk.f32() + (h * cap + c) * D : ck.f32() + (h * Lc + c - hist) * D;
      double want = 0;
      for (int32_t w : win)
        for (int d = 0; d < D; ++d) want += 0.5 * q.f32()[(h * Lc + w) * D + d] * k[d];
      EXPECT_NEAR(got, want, 1e-5);
    }
  // Softmax scores: each window query contributes a distribution over the non-window columns.
  window_scores_ref(q, win, hk, hist, ck, 0.5f, WindowScore::Softmax, s);
  for (int h = 0; h < H; ++h) {
    double sum = 0;
    for (int c = 0; c < hist + Lc; ++c) sum += s.f32()[h * (hist + Lc) + c];
    EXPECT_NEAR(sum, 2.0, 1e-5);
    EXPECT_EQ(s.f32()[h * (hist + Lc) + hist + 1], 0.0f);
  }
}

TEST(KVSelectRef, PoolingAndTopkSemantics) {
  Tensor x = Tensor::from_vector({1, -INFINITY, 5, 2, 2, 0, 3}, {1, 1, 7}), y = Tensor::empty({1, 1, 7});
  pool1d_ref(x, 3, WindowPool::Max, y);
  EXPECT_EQ(y.to_vector(), (std::vector<float>{1, 5, 5, 5, 2, 3, 3}));
  Tensor f = Tensor::from_vector({3, 0, 3, 6, 0}, {1, 1, 5}), a = Tensor::empty({1, 1, 5});
  pool1d_ref(f, 3, WindowPool::Avg, a);  // zero padding counted: (0 + 3 + 0) / 3 at the left border
  EXPECT_EQ(a.to_vector(), (std::vector<float>{1, 2, 3, 3, 2}));
  // ties: lower index first; window columns never candidates but always kept; output ascending
  Tensor p = Tensor::from_vector({4, 7, 4, 4, 9, 1}, {1, 1, 6}), kept = Tensor::empty({1, 1, 4}, DType::I32);
  topk_keep_ref(p, {4}, 3, kept);
  EXPECT_EQ(kept.to_vector(), (std::vector<float>{0, 1, 2, 4}));
  EXPECT_THROW(topk_keep_ref(p, {4}, 6, kept), Error);
}

// Every compression of the official ScaleKV run: max_pool1d(scores) == pooled, topk_keep(pooled,
// window, capacity - 16) == kept (the golden breaks ties to the lower index, as we do), and the window
// positions are scalekv_window's.
TEST(KVSelectRef, ReproducesTheOfficialScaleKVRecords) {
  const std::string path = golden_file("infinity-tiny.scalekv.expected.safetensors");
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " is absent";
  SafeTensors st(path);
  const int side[] = {1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64};
  int records = 0;
  for (int si = 0; si < 13; ++si)
    for (int l = 0; l < 64; ++l) {
      const std::string p = fmt::format("kv.{}.{}.", si, l);
      if (!st.contains(p + "kept")) continue;
      ++records;
      Tensor scores = st.load(p + "scores", MemCategory::Workspace), pooled = st.load(p + "pooled", MemCategory::Workspace);
      Tensor kept = st.load_raw(p + "kept"), window = st.load_raw(p + "window"), window_q = st.load_raw(p + "window_q");
      Tensor mine = Tensor::empty(scores.shape());
      pool1d_ref(scores, 5, WindowPool::Max, mine);
      ASSERT_EQ(test::max_abs_diff(mine, pooled), 0.0) << p << "pooled";
      const auto win_q = scalekv_window(side[si], side[si]);
      const int64_t hist = scores.dim(2) - side[si] * side[si];
      std::vector<int32_t> cols;
      for (int i = 0; i < 16; ++i) {
        ASSERT_EQ(win_q[i], window_q.data<int64_t>()[i]) << p << "window_q";
        cols.push_back(static_cast<int32_t>(window.data<int64_t>()[i]));
        ASSERT_EQ(cols.back(), hist + win_q[i]) << p << "window";
      }
      const int64_t budget = kept.dim(2);
      Tensor got = Tensor::empty({kept.dim(0), kept.dim(1), budget}, DType::I32);
      topk_keep_ref(pooled, cols, budget - 16, got);
      const Tensor want = host_i32(kept);
      for (int64_t i = 0; i < want.numel(); ++i)
        ASSERT_EQ(got.data<int32_t>()[i], want.data<int32_t>()[i]) << p << "kept at " << i;
    }
  EXPECT_EQ(records, 24);  // scales 7..12 x 4 layers
}

}  // namespace skv
