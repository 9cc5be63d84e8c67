#include "launcher/model_files.h"

#include <cstdlib>
#include <filesystem>

#include "runtime/check.h"

#ifndef SKV_DEFAULT_MODEL_DIR
#define SKV_DEFAULT_MODEL_DIR "models/demo"
#endif

namespace skv {

std::string default_model_dir() {
  if (const char* env = std::getenv("SKV_MODEL_DIR")) return env;
  return SKV_DEFAULT_MODEL_DIR;
}

ModelFiles resolve_model_files(ModelFiles f) {
  const bool any = !f.config.empty() || !f.weights.empty() || !f.vae.empty();
  if (!any) {
    const std::string d = default_model_dir();
    f.config = d + "/var-fmnist.config.json";
    f.weights = d + "/var-fmnist.var.safetensors";
    f.vae = d + "/var-fmnist.vae.safetensors";
    SKV_CHECK(std::filesystem::exists(f.config), "no --model given and the demo model is missing ({}); pass --model, "
              "--weights and --vae", f.config);
  }
  SKV_CHECK(!f.config.empty(), "--model CONFIG.json is required when --weights or --vae is given");
  SKV_CHECK(!f.weights.empty(), "--weights FILE.safetensors is required with --model");
  SKV_CHECK(!f.vae.empty(), "--vae FILE.safetensors is required with --model");
  for (const auto* p : {&f.config, &f.weights, &f.vae})
    SKV_CHECK(std::filesystem::exists(*p), "{}: no such file", *p);
  return f;
}

std::vector<int64_t> parse_labels(const std::string& spec, int64_t num_classes, int64_t max_images) {
  struct Run {
    int64_t a, b, rep;
  };
  std::vector<Run> runs;
  int64_t count = 0;
  size_t i = 0;
  auto num = [&](size_t& p) {
    SKV_CHECK(p < spec.size() && std::isdigit(static_cast<unsigned char>(spec[p])),
              "--labels '{}': expected a number at position {}", spec, p + 1);
    int64_t v = 0;
    while (p < spec.size() && std::isdigit(static_cast<unsigned char>(spec[p]))) {
      v = v * 10 + (spec[p] - '0');
      SKV_CHECK(v < (1ll << 40), "--labels '{}': number too large", spec);
      ++p;
    }
    return v;
  };
  while (i < spec.size()) {
    int64_t a = num(i), b = a, rep = 1;
    if (i < spec.size() && spec[i] == '-') {
      ++i;
      b = num(i);
      SKV_CHECK(b >= a, "--labels '{}': range {}-{} is reversed", spec, a, b);
    }
    if (i < spec.size() && spec[i] == 'x') {
      ++i;
      rep = num(i);
      SKV_CHECK(rep >= 1 && rep <= 100000, "--labels '{}': repeat count {} out of range", spec, rep);
    }
    // Validated before anything is allocated: a label range of a billion is refused here, not after
    // the list has grown to gigabytes.
    if (num_classes > 0)
      SKV_CHECK(b < num_classes, "--labels '{}': class label {} outside [0, {}) (the model has {} classes)", spec, b,
                num_classes, num_classes);
    count += (b - a + 1) * rep;  // <= 2^40 * 10^5 per run: no overflow before the check below
    SKV_CHECK(count <= max_images, "--labels '{}' asks for {} images; one run takes at most {} (split the labels over "
              "several runs)", spec, count, max_images);
    runs.push_back({a, b, rep});
    if (i < spec.size()) {
      SKV_CHECK(spec[i] == ',', "--labels '{}': unexpected '{}' (use e.g. 3,7 or 0-9 or 0-9x4)", spec, spec[i]);
      ++i;
    }
  }
  SKV_CHECK(count > 0, "--labels is empty: give class labels such as 3,7 or 0-9 or 0-9x4");
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(count));
  for (const Run& r : runs)
    for (int64_t k = 0; k < r.rep; ++k)
      for (int64_t v = r.a; v <= r.b; ++v) out.push_back(v);
  return out;
}

}  // namespace skv
