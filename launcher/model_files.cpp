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

std::vector<int64_t> parse_labels(const std::string& spec) {
  std::vector<int64_t> out;
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
    for (int64_t r = 0; r < rep; ++r)
      for (int64_t v = a; v <= b; ++v) out.push_back(v);
    if (i < spec.size()) {
      SKV_CHECK(spec[i] == ',', "--labels '{}': unexpected '{}' (use e.g. 3,7 or 0-9 or 0-9x4)", spec, spec[i]);
      ++i;
    }
  }
  SKV_CHECK(!out.empty(), "--labels is empty");
  return out;
}

}  // namespace skv
