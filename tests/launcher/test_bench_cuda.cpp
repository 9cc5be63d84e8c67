// The GPU benchmark report's host side: the attention shapes a policy implies, and a report on a
// machine (or build) without a GPU that says so instead of printing numbers.
#include <gtest/gtest.h>

#include "launcher/bench_cuda.h"
#include "runtime/backend.h"
#include "runtime/check.h"

namespace skv {

namespace {

// Keeps at most `cap` tokens per layer.
class CapPolicy final : public KVPolicy {
 public:
  explicit CapPolicy(int64_t cap) : cap_(cap) {}
  std::string name() const override { return "cap"; }
  int64_t budget(int, int, int64_t total) const override { return std::min(total, cap_); }
  Tensor select(const CompressionInput&, int64_t) override { SKV_FAIL("never selects"); }

 private:
  int64_t cap_;
};

}  // namespace

TEST(BenchCuda, AttentionShapesFollowThePolicy) {
  const Schedule s = Schedule::square({1, 2, 4, 8});
  const auto full = attention_shapes(*make_full_policy(), s, 3);
  ASSERT_EQ(full.size(), 4u);
  EXPECT_EQ(full[0], (std::pair<int64_t, int64_t>{1, 1}));
  EXPECT_EQ(full[3], (std::pair<int64_t, int64_t>{64, 1 + 4 + 16 + 64}));
  const auto capped = attention_shapes(CapPolicy(10), s, 3);
  EXPECT_EQ(capped[2], (std::pair<int64_t, int64_t>{16, 5 + 16}));
  EXPECT_EQ(capped[3], (std::pair<int64_t, int64_t>{64, 10 + 64}));
}

TEST(BenchCuda, ReportSaysWhenNoGpuIsThere) {
  std::string why;
  if (cuda_available(&why)) GTEST_SKIP() << "a GPU is present: tests/cuda covers the report";
  CudaBenchReport r(DType::BF16);
  r.profile("batch 1", [] { FAIL() << "must not run without a GPU"; });
  EXPECT_NE(r.markdown().find("not available"), std::string::npos);
}

}  // namespace skv
