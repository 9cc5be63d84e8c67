// kvcache/policy_factory: budget specs, the policy factory and its one-line errors for bad input.
#include <gtest/gtest.h>

#include "kvcache/policy_factory.h"
#include "runtime/check.h"
#include "test_util.h"

namespace skv {

using test::error_of;

TEST(KVOptions, BudgetSharesRoundUpToTwoSignificantDigits) {
  const Schedule s1m = infinity_schedule(1.0, "1M"), s512 = infinity_schedule(1.0, "0.25M");
  EXPECT_EQ(resolve_kv_budget("10%", s1m), 650);  // 642.5 -> 650, the paper's 10 %
  EXPECT_EQ(resolve_kv_budget("4%", s1m), 260);
  EXPECT_EQ(resolve_kv_budget("20%", s1m), 1300);
  EXPECT_EQ(resolve_kv_budget("10%", s512), 150);  // 149.7
  EXPECT_EQ(resolve_kv_budget("", s512), 150);     // the default is 10%
  EXPECT_EQ(resolve_kv_budget("100%", s512), 1497);
  EXPECT_EQ(resolve_kv_budget("650", s1m), 650);
  EXPECT_EQ(round_up_2_significant(42.4), 43);
  EXPECT_EQ(round_up_2_significant(9.2), 10);
  EXPECT_EQ(round_up_2_significant(1285), 1300);
}

TEST(KVOptions, BadInputIsOneLineNamingTheValue) {
  const Schedule s = infinity_schedule(1.0, "1M");
  EXPECT_NE(error_of([&] { resolve_kv_budget("0%", s); }).find("--kv-budget 0% is outside (0, 100]"), std::string::npos);
  EXPECT_NE(error_of([&] { resolve_kv_budget("150%", s); }).find("outside (0, 100]"), std::string::npos);
  EXPECT_NE(error_of([&] { resolve_kv_budget("ten%", s); }).find("not a percentage"), std::string::npos);
  EXPECT_NE(error_of([&] { resolve_kv_budget("65x", s); }).find("not a percentage (e.g. 10%) or a token count"),
            std::string::npos);
  EXPECT_NE(error_of([&] { resolve_kv_budget("0", s); }).find("at least 1"), std::string::npos);
  KVOptions o;
  KVModelInfo m{32, 16, s};
  o.policy = "h2o";
  const std::string e = error_of([&] { make_kv_policy(o, m); });
  EXPECT_NE(e.find("unknown --kv-policy 'h2o' (available: full, sliding-window, streamingllm, snapkv, pyramidkv, scalekv)"),
            std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos);
  o.policy = "scalekv";
  o.budget = "10";
  EXPECT_NE(error_of([&] { make_kv_policy(o, m); }).find("below the observation window of 16 tokens"), std::string::npos);
  o.budget = "10%";
  o.scoring = "exact";
  EXPECT_NE(error_of([&] { make_kv_policy(o, m); }).find("unknown --scalekv-scoring 'exact'"), std::string::npos);
  o.scoring = "reference";
  o.calibration = "table";
  EXPECT_NE(error_of([&] { make_kv_policy(o, m); }).find("needs --kv-budget-table"), std::string::npos);
  o.calibration = "auto";
  o.policy = "snapkv";
  o.budget_table = "x.json";
  EXPECT_NE(error_of([&] { make_kv_policy(o, m); }).find("use it with --kv-policy scalekv"), std::string::npos);
  o.budget_table.clear();
  o.budget = "1%";  // 64 tokens: fine for snapkv; 0.1% = 6.5 -> 7 is below its window
  EXPECT_NO_THROW(make_kv_policy(o, m));
  o.budget = "0.1%";
  EXPECT_NE(error_of([&] { make_kv_policy(o, m); }).find("below the observation window"), std::string::npos);
}

TEST(KVOptions, TheModelsWindowIsTheDefaultAndTheOptionOverridesIt) {
  const Schedule s = infinity_schedule(1.0, "0.25M");
  KVModelInfo small{32, 16, s, 4};  // a config with kv_window 4 (the demo model's)
  KVOptions o;
  o.budget = "10";
  for (const std::string p : {"scalekv", "snapkv", "pyramidkv"}) {
    o.policy = p;
    o.window = 0;  // not given: the model's 4 tokens fit a 10-token budget
    EXPECT_NO_THROW(make_kv_policy(o, small)) << p;
    o.window = 16;  // --kv-window 16 does not, and the error says what to change
    const std::string e = error_of([&] { make_kv_policy(o, small); });
    EXPECT_NE(e.find("observation window of 16"), std::string::npos) << p << ": " << e;
    EXPECT_NE(e.find("smaller --kv-window"), std::string::npos) << p << ": " << e;
  }
}

TEST(KVOptions, EveryPolicyNameBuilds) {
  const Schedule s = infinity_schedule(1.0, "0.25M");
  for (const char* p : {"full", "sliding-window", "streamingllm", "snapkv", "pyramidkv", "scalekv"}) {
    KVOptions o;
    o.policy = p;
    auto pol = make_kv_policy(o, {32, 16, s});
    EXPECT_EQ(pol->name(), p);
  }
}

}  // namespace skv
