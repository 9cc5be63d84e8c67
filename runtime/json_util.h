// json_util.h - typed access to JSON config fields with errors that name the file and key.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace skv {

// Reads a JSON file (a regular file only: runtime/file_io.h) with parse_json_strict.
nlohmann::json read_json_file(const std::string& path);  // "<path>: not valid JSON (...)" on failure
// Parses JSON text, refusing a key that appears twice in one object (nlohmann would keep the last one
// silently): "<what>: <top_noun> 'k' appears twice" at the top level, "<what>: key 'k' appears twice in
// 'parent'" below it. `what` names the source in every error.
nlohmann::json parse_json_strict(std::string_view text, const std::string& what, const std::string& top_noun = "key");

class JsonFields {
 public:
  JsonFields(const nlohmann::json& j, std::string where) : j_(j), where_(std::move(where)) {}
  bool has(const std::string& key) const { return j_.contains(key) && !j_[key].is_null(); }
  int64_t integer(const std::string& key) const;
  int64_t integer(const std::string& key, int64_t dflt) const;
  double number(const std::string& key) const;
  double number(const std::string& key, double dflt) const;
  bool boolean(const std::string& key) const;  // accepts true/false and 0/1
  bool boolean(const std::string& key, bool dflt) const;
  std::string string(const std::string& key) const;
  std::string string(const std::string& key, const std::string& dflt) const;
  std::vector<int64_t> integers(const std::string& key) const;
  std::vector<double> numbers(const std::string& key) const;
  std::vector<std::string> strings(const std::string& key) const;
  JsonFields object(const std::string& key) const;
  const nlohmann::json& raw() const { return j_; }
  const std::string& where() const { return where_; }
  // Requires `cond`, else "<where>: field '<key>' <msg>".
  void require(bool cond, const std::string& key, const std::string& msg) const;

 private:
  const nlohmann::json& at(const std::string& key) const;
  const nlohmann::json& j_;
  std::string where_;
};

}  // namespace skv
