#include <gtest/gtest.h>

#include "runtime/check.h"
#include "runtime/tensor.h"

namespace skv {

TEST(Tensor, ViewsShareStorage) {
  Tensor t = Tensor::zeros({4, 3});
  Tensor row = t[2];
  EXPECT_EQ(row.shape(), Shape({3}));
  row.f32()[1] = 5.0f;
  EXPECT_EQ(t.f32()[2 * 3 + 1], 5.0f);
  Tensor s = t.slice0(1, 3);
  EXPECT_EQ(s.shape(), Shape({2, 3}));
  EXPECT_EQ(s.f32()[3 + 1], 5.0f);
  EXPECT_EQ(t.reshape({-1}).shape(), Shape({12}));
  EXPECT_THROW(t.reshape({5, -1}), Error);
  EXPECT_THROW(t.slice0(2, 5), Error);
}

TEST(Tensor, ConvertsHalfTypesToFloat) {
  Tensor h = Tensor::empty({2}, DType::F16);
  h.data<uint16_t>()[0] = 0x3c00;
  h.data<uint16_t>()[1] = 0xc000;
  EXPECT_EQ(h.to_vector(), (std::vector<float>{1.0f, -2.0f}));
}

TEST(Allocator, CountsCurrentAndPeakPerCategory) {
  Allocator& a = Allocator::host();
  const MemStats before = a.stats();
  a.reset_peaks();
  {
    Tensor kv = Tensor::empty({1000}, DType::F32, MemCategory::KV);
    {
      Tensor kv2 = Tensor::empty({500}, DType::F32, MemCategory::KV);
      EXPECT_EQ(a.stats().cur(MemCategory::KV) - before.cur(MemCategory::KV), 6000);
    }
    EXPECT_EQ(a.stats().cur(MemCategory::KV) - before.cur(MemCategory::KV), 4000);
    EXPECT_EQ(a.stats().pk(MemCategory::KV) - before.cur(MemCategory::KV), 6000);
  }
  EXPECT_EQ(a.stats().cur(MemCategory::KV), before.cur(MemCategory::KV));
  a.reset_peaks();
  EXPECT_EQ(a.stats().pk(MemCategory::KV), before.cur(MemCategory::KV));
}

TEST(Check, MessageIsOneLineWithLocation) {
  try {
    SKV_CHECK(1 == 2, "value {} is bad", 42);
    FAIL();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("value 42 is bad"), std::string::npos);
    EXPECT_NE(m.find("test_tensor.cpp"), std::string::npos);
    EXPECT_EQ(m.find('\n'), std::string::npos);
  }
}

}  // namespace skv
