// api.cpp - see api.h.
#include "server/api.h"

#include <fmt/core.h>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "runtime/check.h"
#include "runtime/models/t5_tokenizer.h"

namespace skv {

namespace {

using json = nlohmann::json;

const char* kFields[] = {"prompt",      "n",    "size", "response_format", "output_format", "stream", "partial_images",
                         "model",       "user", "class_label", "seed", "cfg", "top_k", "top_p", "kv_policy", "kv_budget"};

// A value as an error message shows it: short, and never a deep structure printed recursively.
std::string shown(const json& j) {
  if (j.is_object()) return "an object";
  if (j.is_array()) return "an array";
  std::string d = j.dump(-1, ' ', false, json::error_handler_t::replace);  // bytes that are not UTF-8: U+FFFD
  return d.size() > 60 ? d.substr(0, 57) + "..." : d;
}

[[noreturn]] void bad(const std::string& field, const std::string& message) { throw ApiError(400, field, message); }

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

int64_t get_int(const json& j, const std::string& field, int64_t lo, int64_t hi) {
  if (!j.is_number_integer()) bad(field, fmt::format("field '{}' must be an integer in [{}, {}], not {}", field, lo, hi, shown(j)));
  if (j.is_number_unsigned() && j.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    bad(field, fmt::format("field '{}' = {} is outside [{}, {}]", field, shown(j), lo, hi));
  const int64_t v = j.get<int64_t>();
  if (v < lo || v > hi) bad(field, fmt::format("field '{}' = {} is outside [{}, {}]", field, v, lo, hi));
  return v;
}

double get_number(const json& j, const std::string& field, double lo, double hi) {
  if (!j.is_number()) bad(field, fmt::format("field '{}' must be a number in [{}, {}], not {}", field, lo, hi, shown(j)));
  const double v = j.get<double>();
  if (!std::isfinite(v) || v < lo || v > hi) bad(field, fmt::format("field '{}' = {} is outside [{}, {}]", field, v, lo, hi));
  return v;
}

std::string get_string(const json& j, const std::string& field) {
  if (!j.is_string()) bad(field, fmt::format("field '{}' must be a string, not {}", field, shown(j)));
  return j.get<std::string>();
}

std::string trimmed(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}

// A VAR class from a prompt: its name (any case, surrounding space ignored) or its number; -1 if none.
int64_t class_named(const std::string& prompt, const ModelInfo& m) {
  const std::string p = lower(trimmed(prompt));
  for (size_t i = 0; i < m.class_names.size(); ++i)
    if (lower(m.class_names[i]) == p) return static_cast<int64_t>(i);
  if (!p.empty() && p.size() < 10 && std::all_of(p.begin(), p.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
    const int64_t v = std::stoll(p);
    if (v < m.num_classes) return v;
  }
  return -1;
}

int64_t class_of_prompt(const std::string& prompt, const ModelInfo& m) {
  const int64_t c = class_named(prompt, m);
  if (c >= 0) return c;
  std::string names;
  for (size_t i = 0; i < m.class_names.size(); ++i) names += fmt::format("{}{} ({})", i ? ", " : "", m.class_names[i], i);
  bad("prompt", fmt::format("{} is class-conditional: give class_label in [0, {}) or a prompt that names a class{}{}",
                            m.id, m.num_classes, names.empty() ? "" : ": ", names));
}

}  // namespace

ImageRequest parse_image_request(std::string_view body, const ModelInfo& m, const ApiLimits& limits,
                                 const KVOptions& defaults) {
  json j;
  try {
    j = json::parse(body.begin(), body.end());
  } catch (const json::exception& e) {  // parse errors, and numbers out of range (1e400)
    throw ApiError(400, "", fmt::format("the request body is not valid JSON: {}", e.what()));
  }
  if (!j.is_object()) throw ApiError(400, "", "the request body must be a JSON object");
  for (const auto& [k, v] : j.items())
    if (std::find(std::begin(kFields), std::end(kFields), k) == std::end(kFields))
      bad(k, fmt::format("unknown field '{}'; the fields are {}", k, fmt::join(kFields, ", ")));

  ImageRequest r;
  if (j.contains("model") && !j["model"].is_null() && get_string(j["model"], "model") != m.id)
    bad("model", fmt::format("model '{}' is not served here; this server serves '{}'", j["model"].get<std::string>(), m.id));
  if (j.contains("user") && !j["user"].is_null() && !j["user"].is_string()) bad("user", "field 'user' must be a string");
  if (j.contains("output_format") && !j["output_format"].is_null()) {
    const std::string f = get_string(j["output_format"], "output_format");
    if (f != "png") bad("output_format", fmt::format("output_format '{}' is not supported; the images are png", f));
  }
  bool previews = true;  // OpenAI's partial_images: 0 turns the streamed previews off; any other count gets one per scale
  if (j.contains("partial_images") && !j["partial_images"].is_null())
    previews = get_int(j["partial_images"], "partial_images", 0, 64) > 0;
  if (j.contains("n") && !j["n"].is_null()) r.n = static_cast<int>(get_int(j["n"], "n", 1, limits.max_n));
  if (j.contains("size") && !j["size"].is_null()) {
    const std::string s = get_string(j["size"], "size");
    std::vector<std::string> names;
    for (const ModelSize& z : m.sizes) names.push_back(z.name());
    const auto it = std::find(names.begin(), names.end(), s);
    if (s != "auto" && it == names.end())
      bad("size", fmt::format("size '{}' is not one this model makes; the sizes are {} (or auto: {})", s,
                              fmt::join(names, ", "), names.front()));
    r.size = s == "auto" ? 0 : static_cast<int>(it - names.begin());
  }
  if (j.contains("response_format") && !j["response_format"].is_null()) {
    const std::string f = get_string(j["response_format"], "response_format");
    if (f != "b64_json")
      bad("response_format", fmt::format("response_format '{}' is not supported; use b64_json (images come back inline "
                                         "as base64 PNG; this server stores no files)", f));
  }
  if (j.contains("stream") && !j["stream"].is_null()) {
    if (!j["stream"].is_boolean()) bad("stream", fmt::format("field 'stream' must be true or false, not {}", shown(j["stream"])));
    r.stream = j["stream"].get<bool>();
  }
  r.previews = r.stream && previews;
  std::string prompt;
  if (j.contains("prompt") && !j["prompt"].is_null()) {
    prompt = get_string(j["prompt"], "prompt");
    if (prompt.size() > limits.max_prompt_chars)
      bad("prompt", fmt::format("the prompt has {} characters; the limit is {}", prompt.size(), limits.max_prompt_chars));
  }
  if (m.text()) {  // Infinity: the prompt is the text the model is conditioned on
    if (j.contains("class_label") && !j["class_label"].is_null())
      bad("class_label", fmt::format("class_label is for class-conditional models; {} takes a text prompt", m.id));
    if (trimmed(prompt).empty()) bad("prompt", fmt::format("give a prompt: {} is a text-to-image model", m.id));
    try {
      check_utf8(prompt, "prompt");
    } catch (const Error& e) {
      bad("prompt", e.message());
    }
    r.prompt = prompt;
  } else {
    int64_t label = -1;
    if (j.contains("class_label") && !j["class_label"].is_null()) {
      label = get_int(j["class_label"], "class_label", 0, m.num_classes - 1);
      const int64_t named = prompt.empty() ? -1 : class_named(prompt, m);
      if (named >= 0 && named != label)
        bad("prompt", fmt::format("the prompt names class {} but class_label is {}; give one of them", named, label));
    } else if (!prompt.empty()) {
      label = class_of_prompt(prompt, m);
    } else {
      bad("class_label", fmt::format("give class_label (an integer in [0, {})) or a prompt naming a class", m.num_classes));
    }
    r.labels.assign(static_cast<size_t>(r.n), label);
  }
  if (j.contains("seed") && !j["seed"].is_null()) {
    const json& s = j["seed"];
    if (!s.is_number_integer() || (s.is_number_integer() && !s.is_number_unsigned() && s.get<int64_t>() < 0))
      bad("seed", fmt::format("field 'seed' must be an integer in [0, 2^64), not {}", shown(s)));
    r.seed = s.get<uint64_t>();
  }
  if (j.contains("cfg") && !j["cfg"].is_null()) r.cfg = get_number(j["cfg"], "cfg", 0, 100);
  if (j.contains("top_k") && !j["top_k"].is_null()) r.top_k = static_cast<int>(get_int(j["top_k"], "top_k", 0, m.vocabulary));
  if (j.contains("top_p") && !j["top_p"].is_null()) r.top_p = get_number(j["top_p"], "top_p", 0, 1);

  // KV: the server's policy and budget unless the request names its own.
  r.kv = defaults;
  r.kv.given.clear();
  const bool has_policy = j.contains("kv_policy") && !j["kv_policy"].is_null();
  const bool has_budget = j.contains("kv_budget") && !j["kv_budget"].is_null();
  if (has_policy) {
    const std::string p = get_string(j["kv_policy"], "kv_policy");
    const std::string names = kv_policy_names();
    bool known = false;
    for (size_t a = 0; a <= names.size();) {
      const size_t b = std::min(names.find(", ", a), names.size());
      known |= names.substr(a, b - a) == p;
      a = b + 2;
    }
    if (!known) bad("kv_policy", fmt::format("kv_policy '{}' is not one of {}", p, names));
    if (p != defaults.policy) {
      r.kv.policy = p;
      r.kv.budget.clear();
    }
  }
  if (has_budget) {
    const json& b = j["kv_budget"];
    if (!b.is_string() && !b.is_number_integer())
      bad("kv_budget", fmt::format("field 'kv_budget' must be a share (\"10%\") or tokens per layer (650), not {}", shown(b)));
    r.kv.budget = b.is_string() ? b.get<std::string>() : std::to_string(b.get<int64_t>());
    if (r.kv.policy == "full")
      bad("kv_budget", "kv_budget does not apply to kv_policy 'full' (it caches every token); drop it or name a policy");
    try {
      resolve_kv_budget(r.kv.budget, m.size(r.size).schedule);
    } catch (const Error& e) {
      std::string msg = e.message();
      for (size_t at; (at = msg.find("--kv-budget")) != std::string::npos;) msg.replace(at, 11, "kv_budget");
      bad("kv_budget", msg);
    }
  }
  if (r.kv.policy == "full") r.kv.budget.clear();
  return r;
}

std::string error_body(const std::string& message, const std::string& type, const std::string& param) {
  json e = {{"message", message}, {"type", type}, {"code", nullptr}};
  e["param"] = param.empty() ? json(nullptr) : json(param);
  return json{{"error", e}}.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";  // echoed input may not be UTF-8
}

std::string models_body(const ModelInfo& m, const KVOptions& defaults, const ApiLimits& limits) {
  std::vector<std::string> policies;
  const std::string names = kv_policy_names();
  for (size_t a = 0; a <= names.size();) {
    const size_t b = std::min(names.find(", ", a), names.size());
    policies.push_back(names.substr(a, b - a));
    a = b + 2;
  }
  json model = {{"id", m.id}, {"object", "model"}, {"created", 0}, {"owned_by", "scalekv"}};
  std::vector<std::string> sizes;
  for (const ModelSize& z : m.sizes) sizes.push_back(z.name());
  model["scalekv"] = {{"family", m.family},
                      {"sizes", sizes},
                      {"num_classes", m.num_classes},
                      {"class_names", m.class_names},
                      {"prompt", m.text() ? "text" : "class"},
                      {"max_prompt_chars", limits.max_prompt_chars},
                      {"num_scales", m.size().schedule.num_scales()},
                      {"max_n", limits.max_n},
                      {"kv_policies", policies},
                      {"kv_budgets", {"10%", "5%", "20%", "50%", "tokens per layer, e.g. 650"}},
                      {"default_kv_policy", defaults.policy},
                      {"default_kv_budget", defaults.policy == "full" ? "" : (defaults.budget.empty() ? "10%" : defaults.budget)}};
  return json{{"object", "list"}, {"data", {model}}}.dump() + "\n";
}

std::string base64_encode(std::string_view in) {
  static const char* tbl = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += tbl[v >> 18];
    out += tbl[(v >> 12) & 63];
    out += tbl[(v >> 6) & 63];
    out += tbl[v & 63];
  }
  if (i < in.size()) {
    const uint32_t v = (uint8_t(in[i]) << 16) | (i + 1 < in.size() ? uint8_t(in[i + 1]) << 8 : 0);
    out += tbl[v >> 18];
    out += tbl[(v >> 12) & 63];
    out += i + 1 < in.size() ? tbl[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

}  // namespace skv
