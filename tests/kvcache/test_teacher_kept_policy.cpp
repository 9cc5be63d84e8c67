// TeacherKeptPolicy: the cache ends up holding exactly the recorded kept tokens (per row and head,
// this rank's slice of the heads), the inner policy still selects - with a CompressionRecord - at every
// recorded compression, a disagreeing inner budget is reported, and unrecorded scales keep everything.
#include <gtest/gtest.h>

#include <algorithm>

#include "kvcache/multiscale_cache.h"
#include "kvcache/planner.h"
#include "kvcache/teacher_kept_policy.h"
#include "runtime/check.h"

namespace skv {

namespace {

// Keeps the first `keep` tokens and records a fake score per token.
class KeepFirst final : public KVPolicy {
 public:
  explicit KeepFirst(int64_t keep) : keep_(keep) {}
  std::string name() const override { return "keep-first"; }
  int64_t budget(int, int, int64_t total) const override { return std::min(total, keep_); }
  QueryNeeds queries() const override { return {true, false}; }
  Tensor select(const CompressionInput& in, int64_t budget) override {
    const int64_t total = in.total(), RH = static_cast<int64_t>(in.rows) * in.heads;
    std::vector<int32_t> kept;
    for (int64_t rh = 0; rh < RH; ++rh)
      for (int64_t j = 0; j < budget; ++j) kept.push_back(static_cast<int32_t>(j));
    if (in.record) in.record->scores.assign(static_cast<size_t>(RH * total), 1.5f);
    ++calls;
    return kept_on_backend(*in.backend, kept, in.rows, in.heads, budget);
  }
  int calls = 0;

 private:
  int64_t keep_;
};

}  // namespace

TEST(TeacherKeptPolicy, ReplaysRecordedIndicesAndLetsTheInnerPolicySelect) {
  const Schedule s = Schedule::square({1, 2, 3});  // 1 + 4 + 9 tokens
  const int rows = 2, heads = 4, local = 2, offset = 2;  // this rank owns heads 2 and 3 of 4
  KeepFirst inner(4);
  TeacherKeptPolicy tk(&inner, heads);
  // scale 1 (total 5 tokens): keep 3 per (row, head), different per global head
  std::vector<int32_t> rec;
  for (int r = 0; r < rows; ++r)
    for (int h = 0; h < heads; ++h)
      for (int j = 0; j < 3; ++j) rec.push_back(static_cast<int32_t>((h + j * 2) % 5));
  for (int rh = 0; rh < rows * heads; ++rh) std::sort(rec.begin() + rh * 3, rec.begin() + rh * 3 + 3);
  tk.set_kept(1, 0, rows, 3, rec);
  EXPECT_EQ(tk.budget(0, 0, 1), 1);  // nothing recorded: keep all
  EXPECT_EQ(tk.budget(0, 1, 5), 3);
  EXPECT_TRUE(tk.queries().raw);
  const KVPlan plan = plan_kv(tk, s, 1, 1);
  EXPECT_EQ(plan.pool_tokens, 3);
  MultiScaleKVCache c(cpu_backend(), rows, local, 1, 1, plan.pool_tokens);
  c.track_positions(true);
  for (int si = 0; si < 2; ++si) {
    c.begin_scale(s.tokens(si), s.offset(si));
    for (int64_t i = 0; i < c.cur_k().numel(); ++i) {
      const int64_t rh = i / s.tokens(si), t = i % s.tokens(si);
      c.cur_k().f32()[i] = static_cast<float>(1000 * rh + s.offset(si) + t);  // value = 1000*(r*local+h) + position
    }
    Tensor q = Tensor::zeros({rows, local, s.tokens(si), 1});
    c.update(0, si, tk, s, &q, nullptr, 1.0f, offset);
    c.end_scale();
  }
  const auto& L = c.layer(0);
  ASSERT_EQ(L.len, 3);
  const auto segs = c.store_segments(0);  // the layer's tokens as views into the pool, in order
  for (int r = 0; r < rows; ++r)
    for (int h = 0; h < local; ++h) {
      int j = 0;
      for (const auto& sg : segs)
        for (int64_t t = 0; t < sg.len; ++t, ++j) {
          const int32_t want = rec[(r * heads + offset + h) * 3 + j];
          const float got = sg.k->f32()[(r * local + h) * sg.k->dim(2) + sg.start + t];
          EXPECT_EQ(got, static_cast<float>(1000 * (r * local + h) + want));
          EXPECT_EQ(L.pos[(r * local + h) * 3 + j], want);
        }
      EXPECT_EQ(j, 3);
    }
  ASSERT_EQ(tk.selections().size(), 1u);
  const auto& sel = tk.selections()[0];
  EXPECT_EQ(inner.calls, 1);
  EXPECT_EQ(sel.budget, 4);
  EXPECT_EQ(sel.replayed, 3);
  EXPECT_EQ(sel.head_offset, offset);
  EXPECT_EQ(sel.kept.size(), static_cast<size_t>(rows * local * 4));
  EXPECT_EQ(sel.record.scores.size(), static_cast<size_t>(rows * local * 5));
  const std::pair<int, int> key{1, 0};
  ASSERT_EQ(tk.budget_mismatches().count(key), 1u);
  EXPECT_EQ(tk.budget_mismatches().at(key).first, 4);
  EXPECT_EQ(tk.budget_mismatches().at(key).second, 3);
}

TEST(TeacherKeptPolicy, RejectsMalformedRecordings) {
  TeacherKeptPolicy tk(nullptr, 2);
  EXPECT_THROW(tk.set_kept(0, 0, 1, 2, {0, 1, 1}), Error);        // wrong count
  EXPECT_THROW(tk.set_kept(0, 0, 1, 2, {0, 1, 3, 2}), Error);     // not ascending
  tk.set_kept(0, 0, 1, 2, {0, 1, 2, 3});
  EXPECT_TRUE(tk.has_kept(0, 0));
  EXPECT_FALSE(tk.queries().raw);
  EXPECT_EQ(tk.name(), "teacher-kept");
}

}  // namespace skv
