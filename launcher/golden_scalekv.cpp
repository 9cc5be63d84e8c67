// golden_scalekv.cpp - the ScaleKV selection stage against the official records (see golden_scalekv.h).
#include "launcher/golden_scalekv.h"

#include <fmt/core.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kvcache/budget_table.h"
#include "kvcache/scalekv.h"
#include "kvcache/selection.h"
#include "runtime/check.h"
#include "runtime/file_io.h"
#include "runtime/safetensors.h"

namespace skv {

namespace {

const std::string kJson = ".scalekv.json", kExpected = ".scalekv.expected.safetensors";

std::string slurp(const std::string& path) { return read_input_file(path, 64ull << 20); }

Schedule schedule_from_config(const nlohmann::json& cfg, const std::string& where) {
  SKV_CHECK(cfg.contains("scale_schedule") && cfg["scale_schedule"].is_array(), "{}: no 'scale_schedule'", where);
  std::vector<ScaleShape> s;
  for (const auto& e : cfg["scale_schedule"]) {
    SKV_CHECK(e.is_array() && e.size() == 3, "{}: 'scale_schedule' entries must be [t, h, w]", where);
    s.push_back({e[0].get<int>(), e[1].get<int>(), e[2].get<int>()});
  }
  return Schedule(std::move(s));
}

std::vector<int64_t> i64(const Tensor& t) {
  SKV_CHECK(t.dtype() == DType::I64, "expected an I64 tensor, got {}", t.describe());
  return std::vector<int64_t>(t.data<int64_t>(), t.data<int64_t>() + t.numel());
}

bool same_floats(const float* a, const float* b, int64_t n) {  // bitwise-equal values (inf == inf)
  for (int64_t i = 0; i < n; ++i)
    if (!(a[i] == b[i])) return false;
  return true;
}

}  // namespace

std::vector<std::string> scalekv_golden_names(const std::string& dir) {
  std::vector<std::string> names;
  if (!std::filesystem::is_directory(dir)) return names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string f = e.path().filename().string();
    if (f.size() > kJson.size() && f.compare(f.size() - kJson.size(), kJson.size(), kJson) == 0) {
      const std::string name = f.substr(0, f.size() - kJson.size());
      if (std::filesystem::exists(dir + "/" + name + kExpected)) names.push_back(name);
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

GoldenOutcome verify_scalekv_selection_golden(const std::string& dir, const std::string& name, const GoldenOptions& opt,
                                              ScaleKVSelectionStats* stats) {
  const std::string base = dir + "/" + name;
  for (const std::string& suffix : {std::string(".config.json"), kJson, kExpected})
    if (!std::filesystem::exists(base + suffix)) return {GoldenStatus::Skip, fmt::format("{}{} is missing", base, suffix)};
  GoldenReport rep(opt.verbose);
  const auto cfg = nlohmann::json::parse(slurp(base + ".config.json"));
  const Schedule sched = schedule_from_config(cfg, base + ".config.json");
  const std::string json_text = slurp(base + kJson);
  const auto sj = nlohmann::json::parse(json_text);
  SafeTensors exp(base + kExpected);
  // Depth: the records' layer indices (every layer is updated at every compressed scale).
  int depth = 0;
  while (exp.contains(fmt::format("kv.{}.{}.scores", sched.num_scales() - 1, depth)) ||
         cfg.value("infinity_kwargs", nlohmann::json::object()).value("depth", 0) > depth)
    ++depth;
  SKV_CHECK(depth > 0, "{}: no kv.*.*.scores records for the last scale", base + kExpected);
  const BudgetTable table = parse_budget_table(json_text, base + kJson, depth, sched);
  int kernel = 5;
  std::string pooling = "maxpool";
  if (sj.contains("scalekv") && sj["scalekv"].contains("enable_scale_kv_args")) {
    kernel = sj["scalekv"]["enable_scale_kv_args"].value("kernel_size", 5);
    pooling = sj["scalekv"]["enable_scale_kv_args"].value("pooling", std::string("maxpool"));
  }
  const PoolKind pool = pooling == "maxpool" ? PoolKind::Max : PoolKind::Avg;
  rep.info("schedule", sched.describe());
  rep.info("budget table", fmt::format("depth {}, base capacity {}, window {}, scales {}..{}", depth, table.base_capacity,
                                       table.window, table.scales.front(), table.scales.back()));

  // The gate and the table: cache lengths before/after every update, as the released code resolves them.
  ScaleKVOptions so;
  so.calibration = ScaleKVCalibration::Table;
  so.table = std::make_shared<BudgetTable>(table);
  ScaleKVPolicy policy(so, depth, sched);
  std::vector<int64_t> len(depth, 0);
  std::map<std::pair<int, int>, std::pair<int64_t, int64_t>> lengths;  // (si, l) -> (before, after)
  int64_t len_good = 0, len_total = 0;
  const nlohmann::json* recorded = nullptr;
  if (sj.contains("scalekv") && sj["scalekv"].contains("cache_len_before_after_per_scale_per_layer"))
    recorded = &sj["scalekv"]["cache_len_before_after_per_scale_per_layer"];
  for (int si = 0; si < sched.num_scales(); ++si)
    for (int l = 0; l < depth; ++l) {
      const int64_t before = len[l] + sched.tokens(si);
      // the released code also compresses after the last scale (capacity of the table's last entry)
      const int64_t cap = si + 1 < sched.num_scales() ? policy.budget(l, si, before)
                          : si >= policy.first_compressed_scale() ? std::min(before, table.capacity(l, si))
                                                                  : before;
      len[l] = cap;
      lengths[{si, l}] = {before, cap};
      if (recorded && recorded->contains(std::to_string(si))) {
        const auto& e = (*recorded)[std::to_string(si)][std::to_string(l)];
        ++len_total;
        len_good += e[0].get<int64_t>() == before && e[1].get<int64_t>() == cap;
      }
    }
  if (recorded) rep.fraction("cache lengths before/after update_kv (gate + table)", len_good, len_total, 1.0);

  ScaleKVSelectionStats st;
  int64_t win_good = 0, win_total = 0, pool_good = 0, topk_good = 0, kept_good = 0, abs_good = 0, rows = 0;
  int64_t records_missing = 0;
  // Absolute positions of every (layer, row, head) cache entry, to check kept_abs.
  std::map<int, std::vector<std::vector<int64_t>>> positions;
  for (int si = 0; si < sched.num_scales(); ++si)
    for (int l = 0; l < depth; ++l) {
      const auto [before, after] = lengths[{si, l}];
      const std::string p = fmt::format("kv.{}.{}.", si, l);
      const bool compressed = after < before;
      if (!exp.contains(p + "scores")) {
        records_missing += compressed;
        if (positions.count(l))  // no compression: this scale's tokens are appended
          for (auto& row : positions[l])
            for (int64_t t = sched.offset(si); t < sched.offset(si + 1); ++t) row.push_back(t);
        continue;
      }
      ++st.compressions;
      const Tensor sc = exp.load_raw(p + "scores");
      const Tensor pooled = exp.load_raw(p + "pooled");
      const auto win = i64(exp.load_raw(p + "window")), win_q = i64(exp.load_raw(p + "window_q"));
      const auto topk = i64(exp.load_raw(p + "topk")), kept = i64(exp.load_raw(p + "kept"));
      const auto kept_abs = exp.contains(p + "kept_abs") ? i64(exp.load_raw(p + "kept_abs")) : std::vector<int64_t>{};
      SKV_CHECK(sc.ndim() == 3 && sc.dtype() == DType::F32, "{}: {}scores is {}, expected F32 [rows, heads, keys]",
                base + kExpected, p, sc.describe());
      const int64_t R = sc.dim(0), H = sc.dim(1), n = sc.dim(2), nw = static_cast<int64_t>(win.size() / (R * H));
      const int64_t cap = table.capacity(l, si), nk = static_cast<int64_t>(kept.size() / (R * H));
      const int64_t ntop = static_cast<int64_t>(topk.size() / (R * H));
      if (n != before || nk != cap) {
        rep.fail(p + "kept", fmt::format("recorded {} -> {} tokens, our gate/table gives {} -> {}", n, nk, before, cap));
        continue;
      }
      const ObsWindow w = scalekv_reference_window(sched.tokens(si), n, table.window);
      if (!positions.count(l)) {  // before the first compression the cache holds the whole sequence
        positions[l].assign(R * H, std::vector<int64_t>());
        for (auto& row : positions[l])
          for (int64_t t = 0; t < sched.offset(si); ++t) row.push_back(t);
      }
      for (auto& row : positions[l])
        for (int64_t t = sched.offset(si); t < sched.offset(si + 1); ++t) row.push_back(t);
      RowSelection sel;
      for (int64_t rh = 0; rh < R * H; ++rh, ++rows) {
        bool wok = static_cast<int64_t>(w.cache_pos.size()) == nw;
        for (int64_t i = 0; wok && i < nw; ++i)
          wok = w.cache_pos[i] == win[rh * nw + i] && w.query_idx[i] == win_q[rh * nw + i];
        win_good += wok;
        ++win_total;
        const float* srow = sc.f32() + rh * n;
        select_row(srow, n, KeepSpec{.window = w.cache_pos, .pool = pool, .kernel = kernel, .budget = cap}, sel);
        pool_good += same_floats(sel.pooled.data(), pooled.f32() + rh * n, n);
        topk_good += static_cast<int64_t>(sel.topk.size()) == ntop &&
                     std::equal(sel.topk.begin(), sel.topk.end(), topk.begin() + rh * ntop);
        const bool kok = static_cast<int64_t>(sel.kept.size()) == nk &&
                         std::equal(sel.kept.begin(), sel.kept.end(), kept.begin() + rh * nk);
        kept_good += kok;
        st.mismatches += !kok;
        // positions: kept indices into the cache as it was -> absolute token positions
        auto& row = positions[l][rh];
        std::vector<int64_t> next;
        for (int64_t j = 0; j < nk; ++j) next.push_back(row[kept[rh * nk + j]]);
        if (!kept_abs.empty()) abs_good += std::equal(next.begin(), next.end(), kept_abs.begin() + rh * nk);
        row.swap(next);
      }
    }
  st.rows = rows;
  rep.info("compressions", fmt::format("{} (scale, layer) records, {} (row, head) selections", st.compressions, rows));
  if (records_missing) rep.fail("records", fmt::format("{} compressions of our gate have no kv.* record", records_missing));
  rep.fraction("window positions and queries", win_good, win_total, 1.0);
  rep.fraction("max-pooled scores (bitwise)", pool_good, rows, 1.0);
  rep.fraction("top-k indices in order (lower-index ties)", topk_good, rows, 1.0);
  rep.fraction("kept indices (sorted)", kept_good, rows, 1.0);
  if (exp.contains(fmt::format("kv.{}.0.kept_abs", table.scales.front())))
    rep.fraction("kept absolute positions", abs_good, rows, 1.0);
  if (stats) *stats = st;
  if (st.compressions == 0) return {GoldenStatus::Fail, "no compression records"};
  return rep.ok() ? GoldenOutcome{GoldenStatus::Pass, ""} : GoldenOutcome{GoldenStatus::Fail, "selection mismatch"};
}

}  // namespace skv
