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
  // Integers are read as 64-bit (a value beyond int64, or a float that is not a whole number, is an
  // error); int_in also range-checks and returns an int, so nothing is truncated on the way to a field.
  int64_t integer(const std::string& key) const;
  int64_t integer(const std::string& key, int64_t dflt) const;
  int int_in(const std::string& key, int64_t lo, int64_t hi) const;
  int int_in(const std::string& key, int64_t dflt, int64_t lo, int64_t hi) const;
  std::vector<int> ints_in(const std::string& key, int64_t lo, int64_t hi, size_t max_count = 4096) const;
  double number(const std::string& key) const;  // finite only
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
  // Every key of the object must be in `used` (what the loader reads) or `recorded` (kept in the file
  // for provenance, not used). An unknown key one or two edits from a used one is an error ("did you
  // mean"): a misspelt optional key would otherwise be ignored silently. Any other unknown key warns.
  void check_keys(const std::vector<std::string>& used, const std::vector<std::string>& recorded) const;

 private:
  const nlohmann::json& at(const std::string& key) const;
  const nlohmann::json& j_;
  std::string where_;
};

}  // namespace skv
