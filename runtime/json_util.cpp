#include "runtime/json_util.h"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cmath>
#include <set>
#include <vector>

#include "runtime/check.h"
#include "runtime/file_io.h"

namespace skv {

nlohmann::json parse_json_strict(std::string_view text, const std::string& what, const std::string& top_noun) {
  struct Level {
    std::string name;  // the key that holds this object ("" for the top level)
    std::set<std::string> keys;
  };
  std::vector<Level> stack;
  std::string last_key;
  std::string dup_key, dup_parent;
  bool dup = false;
  auto cb = [&](int, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (ev == E::object_start) {
      stack.push_back({stack.empty() ? std::string() : last_key, {}});
    } else if (ev == E::object_end) {
      if (!stack.empty()) stack.pop_back();
    } else if (ev == E::key) {
      last_key = parsed.get<std::string>();
      if (!dup && !stack.empty() && !stack.back().keys.insert(last_key).second) {
        dup = true;
        dup_key = last_key;
        dup_parent = stack.size() == 1 ? std::string() : stack.back().name;
      }
    }
    return true;
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.begin(), text.end(), cb);
  } catch (const nlohmann::json::exception& e) {
    SKV_FAIL("{}: not valid JSON ({})", what, e.what());
  }
  if (dup && dup_parent.empty())
    SKV_FAIL("{}: {} '{}' appears twice (a name may appear only once)", what, top_noun, dup_key);
  SKV_CHECK(!dup, "{}: key '{}' appears twice in '{}' (a key may appear only once)", what, dup_key, dup_parent);
  return j;
}

nlohmann::json read_json_file(const std::string& path) {
  return parse_json_strict(read_input_file(path, 64ull << 20), path);
}

const nlohmann::json& JsonFields::at(const std::string& key) const {
  SKV_CHECK(j_.is_object() && has(key), "{}: missing field '{}'", where_, key);
  return j_[key];
}

void JsonFields::require(bool cond, const std::string& key, const std::string& msg) const {
  SKV_CHECK(cond, "{}: field '{}' {}", where_, key, msg);
}

namespace {

// A JSON value as a 64-bit integer: integers beyond int64 and non-whole floats are refused (false).
bool to_int64(const nlohmann::json& v, int64_t* out) {
  if (v.is_number_unsigned()) {
    if (v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) return false;
    *out = static_cast<int64_t>(v.get<uint64_t>());
    return true;
  }
  if (v.is_number_integer()) {
    *out = v.get<int64_t>();
    return true;
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (!std::isfinite(d) || std::fabs(d) >= 9.2e18 || d != std::trunc(d)) return false;
    *out = static_cast<int64_t>(d);
    return true;
  }
  return false;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      const bool same = std::tolower(static_cast<unsigned char>(a[i - 1])) ==
                        std::tolower(static_cast<unsigned char>(b[j - 1]));
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (same ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

}  // namespace

int64_t JsonFields::integer(const std::string& key) const {
  const auto& v = at(key);
  int64_t x = 0;
  require(v.is_number(), key, fmt::format("must be an integer, not {}", v.dump()));
  require(to_int64(v, &x), key, fmt::format("is {}, which is not a 64-bit integer", v.dump()));
  return x;
}
int64_t JsonFields::integer(const std::string& key, int64_t dflt) const { return has(key) ? integer(key) : dflt; }

int JsonFields::int_in(const std::string& key, int64_t lo, int64_t hi) const {
  const int64_t x = integer(key);
  require(x >= lo && x <= hi, key, fmt::format("is {}, outside [{}, {}]", x, lo, hi));
  return static_cast<int>(x);
}
int JsonFields::int_in(const std::string& key, int64_t dflt, int64_t lo, int64_t hi) const {
  return has(key) ? int_in(key, lo, hi) : static_cast<int>(dflt);
}

std::vector<int> JsonFields::ints_in(const std::string& key, int64_t lo, int64_t hi, size_t max_count) const {
  const auto& v = at(key);
  require(v.is_array() && v.size() <= max_count, key, fmt::format("must be an array of at most {} integers", max_count));
  std::vector<int> out;
  for (const auto& e : v) {
    int64_t x = 0;
    require(to_int64(e, &x), key, fmt::format("must hold integers, not {}", e.dump()));
    require(x >= lo && x <= hi, key, fmt::format("holds {}, outside [{}, {}]", x, lo, hi));
    out.push_back(static_cast<int>(x));
  }
  return out;
}

void JsonFields::check_keys(const std::vector<std::string>& used, const std::vector<std::string>& recorded) const {
  if (!j_.is_object()) return;
  for (auto it = j_.begin(); it != j_.end(); ++it) {
    const std::string& k = it.key();
    if (std::find(used.begin(), used.end(), k) != used.end()) continue;
    if (std::find(recorded.begin(), recorded.end(), k) != recorded.end()) continue;
    std::string best;
    size_t best_d = 3;
    for (const auto& u : used) {
      const size_t d = edit_distance(k, u);
      const size_t allowed = std::min(k.size(), u.size()) <= 4 ? 1 : 2;
      if (d <= allowed && d < best_d) best = u, best_d = d;
    }
    SKV_CHECK(best.empty(), "{}: unknown field '{}': did you mean '{}'? (a misspelt key would be ignored)", where_, k,
              best);
    SKV_WARN("{}: unknown field '{}' is ignored", where_, k);
  }
}

double JsonFields::number(const std::string& key) const {
  const auto& v = at(key);
  require(v.is_number(), key, fmt::format("must be a number, not {}", v.dump()));
  require(std::isfinite(v.get<double>()), key, "must be a finite number");
  return v.get<double>();
}
double JsonFields::number(const std::string& key, double dflt) const { return has(key) ? number(key) : dflt; }

bool JsonFields::boolean(const std::string& key) const {
  const auto& v = at(key);
  if (v.is_boolean()) return v.get<bool>();
  require(v.is_number_integer() && (v.get<int64_t>() == 0 || v.get<int64_t>() == 1), key, "must be true/false or 0/1");
  return v.get<int64_t>() == 1;
}
bool JsonFields::boolean(const std::string& key, bool dflt) const { return has(key) ? boolean(key) : dflt; }

std::string JsonFields::string(const std::string& key) const {
  const auto& v = at(key);
  require(v.is_string(), key, "must be a string");
  return v.get<std::string>();
}
std::string JsonFields::string(const std::string& key, const std::string& dflt) const {
  return has(key) ? string(key) : dflt;
}

std::vector<int64_t> JsonFields::integers(const std::string& key) const {
  const auto& v = at(key);
  require(v.is_array(), key, "must be an array of integers");
  std::vector<int64_t> out;
  for (const auto& e : v) {
    int64_t x = 0;
    require(e.is_number_integer() && to_int64(e, &x), key, "must be an array of 64-bit integers");
    out.push_back(x);
  }
  return out;
}

std::vector<double> JsonFields::numbers(const std::string& key) const {
  const auto& v = at(key);
  require(v.is_array(), key, "must be an array of numbers");
  std::vector<double> out;
  for (const auto& e : v) {
    require(e.is_number() && std::isfinite(e.get<double>()), key, "must be an array of finite numbers");
    out.push_back(e.get<double>());
  }
  return out;
}

std::vector<std::string> JsonFields::strings(const std::string& key) const {
  const auto& v = at(key);
  require(v.is_array(), key, "must be an array of strings");
  std::vector<std::string> out;
  for (const auto& e : v) {
    require(e.is_string(), key, "must be an array of strings");
    out.push_back(e.get<std::string>());
  }
  return out;
}

JsonFields JsonFields::object(const std::string& key) const {
  const auto& v = at(key);
  require(v.is_object(), key, "must be an object");
  return JsonFields(v, where_ + ":" + key);
}

}  // namespace skv
