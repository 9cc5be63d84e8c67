// The ScaleKV selection stage against official records: every *.scalekv golden in the shared folder
// (skipped with a message when it is absent), plus a synthetic golden of another depth and schedule
// that must pass as written and fail once one recorded index is changed.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "kvcache/selection.h"
#include "launcher/golden_scalekv.h"
#include "runtime/check.h"
#include "runtime/safetensors.h"

namespace skv {

namespace {

std::string golden_dir() {
  const char* e = std::getenv("SKV_GOLDEN_DIR");
  return e ? e : SKV_GOLDEN_DIR;
}

Tensor i64_tensor(const std::vector<int64_t>& v, const Shape& s) {
  Tensor t = Tensor::empty(s, DType::I64);
  std::copy(v.begin(), v.end(), t.data<int64_t>());
  return t;
}

// A golden in the official format for a 2-layer model and the schedule 1, 2, 4, 8, 12 (base 30):
// compression at scale 3 (85 tokens) and, as the released code does, after the last scale.
struct SyntheticGolden {
  std::string dir;
  SyntheticGolden() {
    dir = (std::filesystem::temp_directory_path() / ("skv_sgold_" + std::to_string(::getpid()))).string();
    std::filesystem::create_directories(dir);
  }
  ~SyntheticGolden() { std::filesystem::remove_all(dir); }

  void write(bool corrupt) {
    const std::vector<int> sides{1, 2, 4, 8, 12};
    nlohmann::json cfg;
    cfg["infinity_kwargs"] = {{"depth", 2}};
    for (int s : sides) cfg["scale_schedule"].push_back({1, s, s});
    std::ofstream(dir + "/syn.config.json") << cfg.dump();
    nlohmann::json sk;
    sk["budget_table"]["Scale 5"] = {{"Block 0", 1}, {"Block 1", 0}, {"High", 1}, {"Max", 40}, {"Min", 20}, {"Limit", 85}};
    sk["scalekv"]["enable_scale_kv_args"] = {{"window_size", 16}, {"max_capacity", 30}, {"kernel_size", 5},
                                             {"pooling", "maxpool"}};
    std::ofstream(dir + "/syn.scalekv.json") << sk.dump();
    std::vector<std::pair<std::string, Tensor>> rec;
    std::mt19937 g(5);
    const int R = 2, H = 1;
    const std::vector<std::pair<int, std::vector<int64_t>>> comp = {{3, {85, 85}}, {4, {40 + 144, 20 + 144}}};
    for (const auto& [si, lens] : comp)
      for (int l = 0; l < 2; ++l) {
        const int64_t n = lens[l], cap = l == 0 ? 40 : 20, cur = sides[si] * sides[si];
        const ObsWindow w = scalekv_reference_window(cur, n, 16);
        Tensor scores = Tensor::empty({R, H, n});
        std::vector<int64_t> win, winq, topk, kept;
        std::vector<float> pooled;
        for (int rh = 0; rh < R * H; ++rh) {
          float* s = scores.f32() + rh * n;
          for (int64_t j = 0; j < n; ++j) s[j] = static_cast<float>(g() % 7);  // coarse values: many ties
          for (int64_t p : w.cache_pos) s[p] = -std::numeric_limits<float>::infinity();
          RowSelection sel;
          select_row(s, n, KeepSpec{.window = w.cache_pos, .pool = PoolKind::Max, .kernel = 5, .budget = cap}, sel);
          win.insert(win.end(), w.cache_pos.begin(), w.cache_pos.end());
          winq.insert(winq.end(), w.query_idx.begin(), w.query_idx.end());
          topk.insert(topk.end(), sel.topk.begin(), sel.topk.end());
          kept.insert(kept.end(), sel.kept.begin(), sel.kept.end());
          pooled.insert(pooled.end(), sel.pooled.begin(), sel.pooled.end());
        }
        if (corrupt && si == 4 && l == 1) std::swap(topk[0], topk[1]);  // top-k order no longer the official one
        const std::string p = "kv." + std::to_string(si) + "." + std::to_string(l) + ".";
        rec.emplace_back(p + "scores", scores);
        rec.emplace_back(p + "pooled", Tensor::from_vector(pooled, {R, H, n}));
        rec.emplace_back(p + "window", i64_tensor(win, {R, H, static_cast<int64_t>(w.cache_pos.size())}));
        rec.emplace_back(p + "window_q", i64_tensor(winq, {R, H, static_cast<int64_t>(w.cache_pos.size())}));
        rec.emplace_back(p + "topk", i64_tensor(topk, {R, H, static_cast<int64_t>(topk.size() / (R * H))}));
        rec.emplace_back(p + "kept", i64_tensor(kept, {R, H, cap}));
      }
    write_safetensors(dir + "/syn.scalekv.expected.safetensors", rec);
  }
};

}  // namespace

TEST(ScaleKVGolden, SelectionStageReproducesTheOfficialRecords) {
  const std::string dir = golden_dir();
  const auto names = scalekv_golden_names(dir);
  if (names.empty()) GTEST_SKIP() << "no NAME.scalekv.json goldens in " << dir << " (the shared golden folder is absent)";
  for (const auto& name : names) {
    GoldenOptions opt;
    opt.verbose = std::getenv("SKV_GOLDEN_VERBOSE") != nullptr;
    ScaleKVSelectionStats st;
    const GoldenOutcome o = verify_scalekv_selection_golden(dir, name, opt, &st);
    EXPECT_EQ(o.status, GoldenStatus::Pass) << name << ": " << o.reason << " (run `scalekv verify-golden` for details)";
    EXPECT_GT(st.compressions, 0) << name;
    EXPECT_EQ(st.mismatches, 0) << name;
  }
}

TEST(ScaleKVGolden, ASyntheticGoldenOfAnotherShapePassesAndACorruptedOneFails) {
  SyntheticGolden g;
  GoldenOptions opt;
  ScaleKVSelectionStats st;
  g.write(false);
  EXPECT_EQ(scalekv_golden_names(g.dir), std::vector<std::string>{"syn"});
  GoldenOutcome o = verify_scalekv_selection_golden(g.dir, "syn", opt, &st);
  EXPECT_EQ(o.status, GoldenStatus::Pass) << o.reason;
  EXPECT_EQ(st.compressions, 4);
  EXPECT_EQ(st.rows, 8);
  g.write(true);
  o = verify_scalekv_selection_golden(g.dir, "syn", opt, &st);
  EXPECT_EQ(o.status, GoldenStatus::Fail);
}

TEST(ScaleKVGolden, MissingFolderSkips) {
  GoldenOptions opt;
  EXPECT_EQ(verify_scalekv_selection_golden("/nonexistent", "x", opt).status, GoldenStatus::Skip);
  EXPECT_TRUE(scalekv_golden_names("/nonexistent").empty());
}

}  // namespace skv
