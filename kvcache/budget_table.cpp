// budget_table.cpp - reading, checking and writing ScaleKV budget tables (see budget_table.h).
#include "kvcache/budget_table.h"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cmath>
#include <nlohmann/json.hpp>

#include "runtime/check.h"
#include "runtime/file_io.h"
#include "runtime/json_util.h"

namespace skv {

using nlohmann::json;

int64_t BudgetTable::capacity(int layer, int si) const {
  if (scales.empty() || si < scales.front()) return -1;
  const int pos = std::min(si, scales.back()) - scales.front();
  return budgets[pos][layer];
}

int64_t BudgetTable::drafter_count(int pos) const {
  return std::count(drafter[pos].begin(), drafter[pos].end(), 1);
}

int first_compressed_scale(const Schedule& schedule, int64_t base) {
  for (int s = 0; s < schedule.num_scales(); ++s)
    if (schedule.offset(s + 1) > base) return s;
  return schedule.num_scales();
}

namespace {

// Budgets, scales and counts are read as 64-bit integers and range-checked: nothing wraps.
constexpr int64_t kMaxTokens = int64_t{1} << 40;

int64_t as_int(const json& v, const std::string& key, const std::string& where, int64_t lo, int64_t hi) {
  const bool in64 = v.is_number_integer() && (!v.is_number_unsigned() || v.get<uint64_t>() <= uint64_t(INT64_MAX));
  SKV_CHECK(in64, "{}: '{}' must be an integer, not {}", where, key, v.dump());
  const int64_t x = v.get<int64_t>();
  SKV_CHECK(x >= lo && x <= hi, "{}: '{}' is {}, outside [{}, {}]", where, key, x, lo, hi);
  return x;
}

int64_t get_int(const json& o, const std::string& key, const std::string& where, int64_t lo = 0,
                int64_t hi = kMaxTokens) {
  SKV_CHECK(o.is_object() && o.contains(key), "{}: missing '{}'", where, key);
  return as_int(o[key], key, where, lo, hi);
}

std::vector<int64_t> get_ints(const json& o, const std::string& key, const std::string& where, int64_t lo, int64_t hi) {
  SKV_CHECK(o.contains(key) && o[key].is_array(), "{}: '{}' must be an array of integers", where, key);
  std::vector<int64_t> out;
  for (const auto& v : o[key]) out.push_back(as_int(v, key, where, lo, hi));
  return out;
}

std::vector<double> get_numbers(const json& o, const std::string& key, const std::string& where) {
  SKV_CHECK(o[key].is_array(), "{}: '{}' must be an array of numbers", where, key);
  std::vector<double> out;
  for (const auto& v : o[key]) {
    SKV_CHECK(v.is_number() && std::isfinite(v.get<double>()), "{}: '{}' must hold finite numbers, not {}", where,
              key, v.dump());
    out.push_back(v.get<double>());
  }
  return out;
}

// "Scale N" with N a decimal integer in [2, 4096]; -1 otherwise.
int published_scale(const std::string& key) {
  if (key.rfind("Scale ", 0) != 0 || key.size() == 6 || key.size() > 10) return -1;
  int n = 0;
  for (size_t i = 6; i < key.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(key[i]))) return -1;
    n = n * 10 + (key[i] - '0');
  }
  return n >= 2 && n <= 4096 ? n : -1;
}

// The range of scales a table for (schedule, base) must cover: [k0, S - 2] (the last scale is never stored).
void check_scales(const BudgetTable& t, const Schedule& schedule) {
  const int k0 = first_compressed_scale(schedule, t.base_capacity), last = schedule.num_scales() - 2;
  SKV_CHECK(!t.scales.empty(), "{}: the budget table has no scales", t.source);
  std::vector<int> want;
  for (int s = k0; s <= last; ++s) want.push_back(s);
  std::vector<int> have(t.scales);
  if (!have.empty() && have.back() == last + 1) have.pop_back();  // an entry for the last scale is never used
  SKV_CHECK(have == want,
            "{}: budget table for another schedule: it compresses scale indices {} but with base capacity {} the "
            "schedule {} compresses {} (cumulative length first exceeds {} at scale {})",
            t.source, fmt::join(t.scales, ","), t.base_capacity, schedule.describe(),
            want.empty() ? std::string("none") : fmt::format("{}", fmt::join(want, ",")), t.base_capacity, k0);
}

BudgetTable parse_published(const json& bt, const std::string& where, int depth, const Schedule& schedule,
                            int64_t base) {
  BudgetTable t;
  t.source = where;
  std::vector<std::pair<int, const json*>> entries;
  for (auto it = bt.begin(); it != bt.end(); ++it) {
    const int n = published_scale(it.key());
    SKV_CHECK(n >= 2 && it.value().is_object(),
              "{}: unexpected entry '{}' (a published budget table has only \"Scale N\" objects, 2 <= N <= 4096)",
              where, it.key());
    entries.emplace_back(n - 2, &it.value());
  }
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& [si, obj] = entries[i];
    const std::string w = fmt::format("{}: \"Scale {}\"", where, si + 2);
    SKV_CHECK(i == 0 || si == entries[i - 1].first + 1, "{}: scales must be consecutive", w);
    int blocks = 0;
    for (auto it = obj->begin(); it != obj->end(); ++it) blocks += it.key().rfind("Block ", 0) == 0;
    SKV_CHECK(blocks == depth, "{}: budget table for another depth: {} blocks, the model has {} layers", w, blocks,
              depth);
    const int64_t mx = get_int(*obj, "Max", w), mn = get_int(*obj, "Min", w);
    std::vector<uint8_t> d(depth);
    std::vector<int64_t> b(depth);
    for (int l = 0; l < depth; ++l) {
      const std::string key = fmt::format("Block {}", l);
      SKV_CHECK(obj->contains(key), "{}: missing \"{}\" (blocks must be numbered 0..{})", w, key, depth - 1);
      const int64_t f = get_int(*obj, key, w);
      SKV_CHECK(f == 0 || f == 1, "{}: \"{}\" is {}, expected 0 (refiner) or 1 (drafter)", w, key, f);
      d[l] = static_cast<uint8_t>(f);
      b[l] = f ? mx : mn;
    }
    if (obj->contains("High"))
      SKV_CHECK(get_int(*obj, "High", w) == std::count(d.begin(), d.end(), 1),
                "{}: \"High\" is {} but {} blocks are marked 1", w, get_int(*obj, "High", w),
                std::count(d.begin(), d.end(), 1));
    t.scales.push_back(si);
    t.budgets.push_back(b);
    t.drafter.push_back(d);
  }
  SKV_CHECK(!t.scales.empty(), "{}: the budget table has no \"Scale N\" entries", where);
  t.depth = depth;
  if (base > 0) {
    t.base_capacity = base;
  } else {  // the released tables satisfy N_d Max + N_r Min = B * depth at every scale
    int64_t sum = 0;
    for (int64_t v : t.budgets.front()) sum += v;
    t.base_capacity = sum / depth;
  }
  // "Limit" is what a drafter holds before the compression: the cumulative length at the first scale, then
  // the previous Max plus the scale's tokens. It pins the schedule the table was made for.
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& [si, obj] = entries[i];
    if (!obj->contains("Limit") || si >= schedule.num_scales()) continue;
    const int64_t lim = get_int(*obj, "Limit", where);
    const int64_t want = i == 0 ? schedule.offset(si + 1) : get_int(*entries[i - 1].second, "Max", where) +
                                                                 schedule.tokens(si);
    SKV_CHECK(lim == want,
              "{}: budget table for another schedule: \"Scale {}\" has Limit {} but with {} a drafter holds {} "
              "there (scale index {} has {} tokens)",
              where, si + 2, lim, schedule.describe(), want, si, schedule.tokens(si));
  }
  return t;
}

BudgetTable parse_ours(const json& j, const std::string& where, int depth, const Schedule& schedule, int64_t base) {
  BudgetTable t;
  t.source = where;
  t.depth = static_cast<int>(get_int(j, "depth", where, 1, 1 << 20));
  SKV_CHECK(t.depth == depth, "{}: budget table for another depth: {} layers, the model has {}", where, t.depth, depth);
  t.base_capacity = base > 0 ? base : get_int(j, "base_capacity", where);
  if (j.contains("window")) t.window = static_cast<int>(get_int(j, "window", where, 1, 1 << 20));
  if (j.contains("schedule")) {
    SKV_CHECK(j["schedule"].is_array(), "{}: 'schedule' must be an array of [t, h, w]", where);
    for (const auto& s : j["schedule"]) {
      SKV_CHECK(s.is_array() && s.size() == 3, "{}: 'schedule' entries must be [t, h, w]", where);
      t.schedule.push_back({static_cast<int>(as_int(s[0], "schedule", where, 1, 1 << 16)),
                            static_cast<int>(as_int(s[1], "schedule", where, 1, 1 << 16)),
                            static_cast<int>(as_int(s[2], "schedule", where, 1, 1 << 16))});
    }
    std::vector<std::string> a, b;
    for (const auto& s : t.schedule) a.push_back(fmt::format("{}x{}x{}", s.t, s.h, s.w));
    for (const auto& s : schedule.scales()) b.push_back(fmt::format("{}x{}x{}", s.t, s.h, s.w));
    SKV_CHECK(a == b, "{}: budget table for another schedule: made for {}, the run uses {}", where,
              fmt::join(a, " "), fmt::join(b, " "));
  }
  SKV_CHECK(j.contains("scales") && j["scales"].is_array(), "{}: 'scales' must be an array", where);
  for (const auto& e : j["scales"]) {
    SKV_CHECK(e.is_object(), "{}: 'scales' entries must be objects", where);
    const int si = static_cast<int>(get_int(e, "scale", where, 0, 4096));
    const std::string w = fmt::format("{}: scale {}", where, si);
    SKV_CHECK(e.contains("budgets") && e["budgets"].is_array() && static_cast<int>(e["budgets"].size()) == depth,
              "{}: 'budgets' must list {} layers", w, depth);
    std::vector<int64_t> b = get_ints(e, "budgets", w, 0, kMaxTokens);
    std::vector<uint8_t> d(depth, 0);
    if (e.contains("drafters"))
      for (int64_t l : get_ints(e, "drafters", w, 0, depth - 1)) d[l] = 1;
    t.scales.push_back(si);
    t.budgets.push_back(b);
    t.drafter.push_back(d);
    if (e.contains("asi")) t.asi.push_back(get_numbers(e, "asi", w));
    if (e.contains("z")) t.z.push_back(get_numbers(e, "z", w));
  }
  for (size_t i = 1; i < t.scales.size(); ++i)
    SKV_CHECK(t.scales[i] == t.scales[i - 1] + 1, "{}: scales must be consecutive ({} after {})", where, t.scales[i],
              t.scales[i - 1]);
  return t;
}

BudgetTable parse_checked(const json& j, const std::string& where, int depth, const Schedule& schedule, int64_t base) {
  BudgetTable t;
  if (j.contains("format")) {
    SKV_CHECK(j["format"] == "scalekv-budget-table", "{}: unknown format {} (expected \"scalekv-budget-table\" or a "
              "published {{\"Scale N\": ...}} table)", where, j["format"].dump());
    t = parse_ours(j, where, depth, schedule, base);
  } else {
    const json* bt = &j;
    if (j.contains("budget_table")) bt = &j["budget_table"];
    else if (j.contains("scalekv") && j["scalekv"].contains("budget")) bt = &j["scalekv"]["budget"];
    if (base == 0 && j.contains("scalekv") && j["scalekv"].contains("enable_scale_kv_args"))
      base = j["scalekv"]["enable_scale_kv_args"].contains("max_capacity")
               ? get_int(j["scalekv"]["enable_scale_kv_args"], "max_capacity", where, 0, kMaxTokens)
               : 0;
    t = parse_published(*bt, where, depth, schedule, base);
    if (j.contains("scalekv") && j["scalekv"].contains("enable_scale_kv_args"))
      t.window = j["scalekv"]["enable_scale_kv_args"].contains("window_size")
                     ? static_cast<int>(get_int(j["scalekv"]["enable_scale_kv_args"], "window_size", where, 1, 1 << 20))
                     : 16;
  }
  SKV_CHECK(t.base_capacity >= t.window, "{}: base capacity {} is below the observation window of {} tokens", where,
            t.base_capacity, t.window);
  for (size_t i = 0; i < t.scales.size(); ++i)
    for (int l = 0; l < depth; ++l)
      SKV_CHECK(t.budgets[i][l] >= t.window, "{}: scale {} layer {}: budget {} is below the observation window of {} "
                "tokens", where, t.scales[i], l, t.budgets[i][l], t.window);
  check_scales(t, schedule);
  return t;
}

}  // namespace

BudgetTable parse_budget_table(const std::string& text, const std::string& where, int depth, const Schedule& schedule,
                               int64_t base) {
  const json j = parse_json_strict(text, where);
  SKV_CHECK(j.is_object(), "{}: a budget table must be a JSON object", where);
  try {
    return parse_checked(j, where, depth, schedule, base);
  } catch (const json::exception& e) {  // a value of the wrong JSON type the checks above did not name
    SKV_FAIL("{}: unexpected value ({})", where, e.what());
  }
}

BudgetTable read_budget_table(const std::string& path, int depth, const Schedule& schedule, int64_t base) {
  return parse_budget_table(read_input_file(path, 64ull << 20), path, depth, schedule, base);
}

void write_budget_table(const std::string& path, const BudgetTable& t, const std::string& model_name) {
  json j;
  j["format"] = "scalekv-budget-table";
  j["model"] = model_name;
  j["depth"] = t.depth;
  j["base_capacity"] = t.base_capacity;
  j["window"] = t.window;
  json sched = json::array();
  for (const auto& s : t.schedule) sched.push_back({s.t, s.h, s.w});
  j["schedule"] = sched;
  json scales = json::array();
  for (size_t i = 0; i < t.scales.size(); ++i) {
    json e;
    e["scale"] = t.scales[i];
    e["budgets"] = t.budgets[i];
    std::vector<int> d;
    for (int l = 0; l < t.depth; ++l)
      if (t.drafter[i][l]) d.push_back(l);
    e["drafters"] = d;
    if (i < t.asi.size()) e["asi"] = t.asi[i];
    if (i < t.z.size()) e["z"] = t.z[i];
    scales.push_back(e);
  }
  j["scales"] = scales;
  write_file_atomic(path, j.dump(1) + "\n");  // temporary name, checked writes, renamed when complete
}

}  // namespace skv
