// teacher_kept_policy.h - a KVPolicy decorator for parity checks: it replays recorded kept indices
// (the official code's choice, per scale, layer, row and head) so later scales stay teacher-forced,
// while an optional inner policy still selects at every recorded compression - with a
// CompressionRecord attached - so its window, scores, pooled scores and kept set can be compared
// with the recording without one near-tie derailing every later scale.
// Where nothing is recorded the layer keeps everything (the official code did not compress there);
// a differing inner budget is noted, not followed.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include "kvcache/policy.h"

namespace skv {

class TeacherKeptPolicy final : public KVPolicy {
 public:
  // `inner` may be null (pure replay). `global_heads`: heads of the model (recordings hold all heads).
  TeacherKeptPolicy(KVPolicy* inner, int global_heads);

  // Recorded kept indices of (scale, layer): [rows, global_heads, n], ascending per (row, head),
  // indices into [store + current scale] as CompressionInput defines them.
  void set_kept(int scale, int layer, int rows, int64_t n, std::vector<int32_t> kept);
  bool has_kept(int scale, int layer) const { return kept_.count({scale, layer}) != 0; }

  // What the inner policy did at one recorded compression.
  struct Selection {
    int scale = 0, layer = 0, head_offset = 0, local_heads = 0, rows = 0;
    int64_t total = 0;            // store + current tokens it scored
    int64_t budget = 0;           // the inner policy's budget there
    int64_t replayed = 0;         // the recorded budget that was applied
    std::vector<int32_t> kept;    // [rows * local_heads * budget] the inner choice
    CompressionRecord record;     // what it filled in
  };
  const std::vector<Selection>& selections() const { return selections_; }
  // (scale, layer) where the inner budget disagreed with the recording: {inner, recorded} (recorded
  // = total where nothing was recorded).
  const std::map<std::pair<int, int>, std::pair<int64_t, int64_t>>& budget_mismatches() const { return mismatches_; }

  std::string name() const override;
  int64_t budget(int layer, int scale, int64_t total) const override;
  QueryNeeds queries() const override { return inner_ ? inner_->queries() : QueryNeeds{}; }
  void observe(const CompressionInput& in) override {
    if (inner_) inner_->observe(in);
  }
  void begin_request() override {
    if (inner_) inner_->begin_request();
  }
  void set_communicator(Communicator* comm) override {
    if (inner_) inner_->set_communicator(comm);
  }
  Tensor select(const CompressionInput& in, int64_t budget) override;
  void begin_scale(int scale) override {
    if (inner_) inner_->begin_scale(scale);
  }
  void end_scale(int scale) override {
    if (inner_) inner_->end_scale(scale);
  }

 private:
  struct Rec {
    int rows = 0;
    int64_t n = 0;
    std::vector<int32_t> kept;  // [rows, global_heads, n]
  };
  KVPolicy* inner_;
  int heads_;
  std::map<std::pair<int, int>, Rec> kept_;
  std::vector<Selection> selections_;
  mutable std::map<std::pair<int, int>, std::pair<int64_t, int64_t>> mismatches_;
};

}  // namespace skv
