#include <gtest/gtest.h>

#include <map>
#include <vector>

#include "runtime/models/sampler.h"
#include "runtime/rng.h"

namespace skv {

TEST(Sampler, GreedyTakesTheFirstMaximum) {
  std::vector<float> l = {0.1f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(sample_logits(l.data(), 4, {1, 0.0f}, 0.99f), 1);
}

TEST(Sampler, TopKNeverLeavesTheKLargest) {
  std::vector<float> base = {5.0f, 4.0f, 3.0f, -1.0f, 0.0f, 1.0f};
  for (uint32_t i = 0; i < 500; ++i) {
    auto l = base;
    const int64_t t = sample_logits(l.data(), 6, {2, 0.0f}, uniform01(3, i, 0, 0, 0));
    ASSERT_TRUE(t == 0 || t == 1);
  }
}

// The official sample_with_top_k_top_p_ removes logits < the k-th largest (topk(...).amin()): values
// tied with the k-th all stay, however many there are (so top_k 2 over {3, 1, 3, 3} keeps three).
TEST(Sampler, TopKKeepsEveryTieOfTheKthValue) {
  const std::vector<float> base = {3.0f, 1.0f, 3.0f, 3.0f, 0.0f};
  std::map<int64_t, int> seen;
  for (uint32_t i = 0; i < 600; ++i) {
    auto l = base;
    seen[sample_logits(l.data(), 5, {2, 0.0f}, uniform01(7, i, 0, 0, 0))]++;
  }
  EXPECT_EQ(seen.count(1) + seen.count(4), 0u);
  EXPECT_GT(seen[0], 100);
  EXPECT_GT(seen[2], 100);
  EXPECT_GT(seen[3], 100);
}

TEST(Sampler, TopPKeepsTheNucleus) {
  // probabilities ~ [0.64, 0.24, 0.09, 0.03]: top_p = 0.8 keeps the first two
  std::vector<float> base = {3.0f, 2.0f, 1.0f, 0.0f};
  std::map<int64_t, int> seen;
  for (uint32_t i = 0; i < 2000; ++i) {
    auto l = base;
    seen[sample_logits(l.data(), 4, {0, 0.8f}, uniform01(5, i, 0, 0, 0))]++;
  }
  EXPECT_EQ(seen.count(2) + seen.count(3), 0u);
  EXPECT_GT(seen[0], seen[1]);
}

TEST(Sampler, FollowsTheDistributionWithoutFilters) {
  std::vector<float> base = {0.0f, std::log(3.0f)};  // p = 0.25, 0.75
  int ones = 0;
  for (uint32_t i = 0; i < 4000; ++i) {
    auto l = base;
    ones += sample_logits(l.data(), 2, {0, 0.0f}, uniform01(9, i, 1, 2, 0)) == 1;
  }
  EXPECT_NEAR(ones / 4000.0, 0.75, 0.03);
}

}  // namespace skv
