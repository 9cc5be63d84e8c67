#include "runtime/json_util.h"

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

int64_t JsonFields::integer(const std::string& key) const {
  const auto& v = at(key);
  if (v.is_number_float()) {
    const double d = v.get<double>();
    require(d == static_cast<double>(static_cast<int64_t>(d)), key, "must be an integer");
    return static_cast<int64_t>(d);
  }
  require(v.is_number_integer(), key, "must be an integer");
  return v.get<int64_t>();
}
int64_t JsonFields::integer(const std::string& key, int64_t dflt) const { return has(key) ? integer(key) : dflt; }

double JsonFields::number(const std::string& key) const {
  const auto& v = at(key);
  require(v.is_number(), key, "must be a number");
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
    require(e.is_number_integer(), key, "must be an array of integers");
    out.push_back(e.get<int64_t>());
  }
  return out;
}

std::vector<double> JsonFields::numbers(const std::string& key) const {
  const auto& v = at(key);
  require(v.is_array(), key, "must be an array of numbers");
  std::vector<double> out;
  for (const auto& e : v) {
    require(e.is_number(), key, "must be an array of numbers");
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
