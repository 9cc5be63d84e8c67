// api.h - the HTTP API's bodies: OpenAI's images API (POST /v1/images/generations: prompt, n, size,
// response_format, output_format, stream, partial_images) plus scalekv's fields (class_label, seed, cfg, top_k, top_p, kv_policy,
// kv_budget), checked field by field. VAR models take a class (class_label, or a prompt naming one);
// Infinity models take a text prompt (UTF-8, non-blank) and any size of their dynamic-resolution table. Every error names the field and what it accepts; nothing here
// touches files (no request field is ever a path).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "kvcache/policy_factory.h"

namespace skv {

// One image size the model makes (OpenAI's "WxH") and the schedule that makes it.
struct ModelSize {
  int width = 0, height = 0;
  double h_div_w = 0;  // Infinity: the aspect ratio of the dynamic-resolution table (0: the model's one size)
  Schedule schedule;   // budgets in tokens and previews' token counts use it
  std::string name() const { return std::to_string(width) + "x" + std::to_string(height); }
};

// What the server serves, as clients see it (GET /v1/models) and requests are checked against.
struct ModelInfo {
  std::string id;      // the model's name
  std::string family;  // "var" (class labels) or "infinity" (text prompts)
  std::vector<ModelSize> sizes;          // the first is the default ("auto")
  int num_classes = 0;                   // VAR
  std::vector<std::string> class_names;  // VAR; may be empty
  int vocabulary = 0;                    // top_k's upper bound
  bool text() const { return family == "infinity"; }
  const ModelSize& size(int i = 0) const { return sizes.at(static_cast<size_t>(i)); }
};

struct ApiLimits {
  int max_n = 8;              // images per request
  size_t max_prompt_chars = 1000;
};

// A request that passed every check.
struct ImageRequest {
  std::vector<int64_t> labels;  // VAR: one per image
  std::string prompt;           // Infinity: the text of every image
  int size = 0;                 // index into ModelInfo::sizes
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
