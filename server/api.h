// api.h - the HTTP API's bodies: OpenAI's images API (POST /v1/images/generations: prompt, n, size,
// response_format, output_format, stream, partial_images) plus scalekv's fields (class_label, seed, cfg, top_k, top_p, kv_policy,
// kv_budget), checked field by field. Every error names the field and what it accepts; nothing here
// touches files (no request field is ever a path).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "kvcache/policy_factory.h"

namespace skv {

// What the server serves, as clients see it (GET /v1/models) and requests are checked against.
struct ModelInfo {
  std::string id;      // the model's name
  std::string family;  // "var"
  int width = 0, height = 0;
  int num_classes = 0;
  std::vector<std::string> class_names;  // may be empty
  int vocabulary = 0;                    // top_k's upper bound
  Schedule schedule;                     // budgets in tokens are checked against it
  int num_scales() const { return schedule.num_scales(); }
  std::string size() const { return std::to_string(width) + "x" + std::to_string(height); }
};

struct ApiLimits {
  int max_n = 8;              // images per request
  size_t max_prompt_chars = 1000;
};

// A request that passed every check.
struct ImageRequest {
  std::vector<int64_t> labels;  // one per image
  uint64_t seed = 0;
  double cfg = -1;              // < 0: the model's
  int top_k = -1;
  double top_p = -1;
  KVOptions kv;
  bool stream = false;
  bool previews = false;        // stream, and partial_images is not 0
  int n = 1;
};

// A client error: HTTP status, the OpenAI error type and the offending field ("" if none).
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string param, const std::string& message, std::string type = "invalid_request_error")
      : std::runtime_error(message), status(status), param(std::move(param)), type(std::move(type)) {}
  int status;
  std::string param, type;
};

// Parses and checks a POST /v1/images/generations body. `defaults`: the server's --kv-policy/--kv-budget.
ImageRequest parse_image_request(std::string_view body, const ModelInfo& model, const ApiLimits& limits,
                                 const KVOptions& defaults);

// {"error": {"message", "type", "param", "code"}} (OpenAI's error shape).
std::string error_body(const std::string& message, const std::string& type, const std::string& param = "");
// GET /v1/models.
std::string models_body(const ModelInfo& model, const KVOptions& defaults, const ApiLimits& limits);

std::string base64_encode(std::string_view bytes);

}  // namespace skv
