#include "runtime/models/weights.h"

#include <cmath>
#include <cstring>
#include <random>

#include "parallel/communicator.h"
#include "runtime/check.h"
#include "runtime/hostdevice.h"

namespace skv {

namespace {

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

uint64_t fnv1a(const std::string& s, uint64_t seed) {
  uint64_t h = 1469598103934665603ull ^ seed;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

}  // namespace

int64_t ParamCount::rank_bytes(int tp, int64_t matmul_bytes) const {
  SKV_CHECK(tp >= 1, "tensor-parallel size {} must be >= 1", tp);
  const int64_t mm = checked_add(matmul_replicated, matmul_sharded / tp, "Linear weight parameters");
  const int64_t other = checked_add(other_replicated, other_sharded / tp, "parameters");
  return checked_add(checked_mul(mm, matmul_bytes, "Linear weight bytes"), checked_mul(other, 4, "weight bytes"),
                     "weight bytes");
}

WeightLoader::WeightLoader(const SafeTensors& st, Backend& be, std::string why) : st_(&st), be_(be), why_(std::move(why)) {}

WeightLoader::WeightLoader(uint64_t seed, Backend& be) : seed_(seed), be_(be) {}

bool WeightLoader::has(const std::string& name) const { return st_ ? st_->contains(name) : true; }

// Initialisation by parameter role, so random models behave like trained ones numerically (unit
// activations, mild modulation): norms ~1, biases ~0, linear/conv weights ~ N(0, 1/fan_in).
Tensor WeightLoader::random_full(const std::string& name, const Shape& shape) const {
  Tensor t = Tensor::empty(shape, DType::F32, MemCategory::Workspace);
  std::mt19937_64 g(fnv1a(name, seed_));
  std::normal_distribution<float> n01(0.0f, 1.0f);
  float* p = t.f32();
  const int64_t n = t.numel();
  const int64_t fan_in = shape.size() >= 2 ? n / shape[0] : 1;
  const bool is_norm = name.find("norm") != std::string::npos && shape.size() == 1;
  if (ends_with(name, "zero_k_bias")) {
    std::fill(p, p + n, 0.0f);
  } else if (ends_with(name, "scale_mul_1H11")) {
    std::fill(p, p + n, std::log(4.0f));
  } else if (is_norm && ends_with(name, "weight")) {
    for (int64_t i = 0; i < n; ++i) p[i] = 1.0f + 0.05f * n01(g);
  } else if (shape.size() == 1 || ends_with(name, "bias")) {
    for (int64_t i = 0; i < n; ++i) p[i] = 0.02f * n01(g);
  } else if (name.find("ada_lin") != std::string::npos || name.find("ada_gss") != std::string::npos ||
             name.find("emb") != std::string::npos || name.find("pos_") != std::string::npos) {
    for (int64_t i = 0; i < n; ++i) p[i] = 0.02f * n01(g);
  } else {
    const float s = 1.0f / std::sqrt(static_cast<float>(fan_in));
    for (int64_t i = 0; i < n; ++i) p[i] = s * n01(g);
  }
  if (record) {
    bool seen = false;
    for (const auto& [k, v] : *record) seen = seen || k == name;
    if (!seen) record->emplace_back(name, t.clone(MemCategory::Workspace));
  }
  return t;
}

Tensor WeightLoader::place(Tensor host, WeightUse use) const {
  collective_keepalive();  // loading takes long on one rank: the ranks waiting for it hear that it lives
  const DType wdt = be_.weight_dtype();
  if (use == WeightUse::Matmul && host.ndim() == 2 && wdt != DType::F32 && host.dtype() != wdt) {
    Tensor f = host.dtype() == DType::F32 ? host : host.to_f32(MemCategory::Workspace);
    Tensor h = Tensor::empty(host.shape(), wdt, MemCategory::Weights);
    const float* src = f.f32();
    uint16_t* dst = h.data<uint16_t>();
    const int64_t n = h.numel();
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) dst[i] = wdt == DType::BF16 ? f32_to_bf16(src[i]) : f32_to_f16(src[i]);
    host = h;
  }
  bytes_ += static_cast<int64_t>(host.nbytes());
  if (be_.device() == Device::CPU) {
    if (host.category() == MemCategory::Weights) return host;
    return host.clone(MemCategory::Weights);
  }
  return be_.upload(host, MemCategory::Weights);
}

// Every weight read from a file is checked for NaN and Inf once, at load (one pass over memory the
// conversion has just written): a broken checkpoint stops here, naming the file and tensor, instead of
// producing the same image for every label.
Tensor WeightLoader::finite(Tensor t, const std::string& name) const {
  check_finite(t, fmt::format("{}: tensor '{}'", st_->path(), name));
  return t;
}

Tensor WeightLoader::host(const std::string& name, const Shape& shape) const {
  if (!st_) return random_full(name, shape);
  st_->expect_shape(name, shape, why_);
  return finite(st_->load(name, MemCategory::Workspace), name);
}

Tensor WeightLoader::get(const std::string& name, const Shape& shape, WeightUse use) const {
  if (!st_) return place(random_full(name, shape), use);
  st_->expect_shape(name, shape, why_);
  return place(finite(st_->load(name, MemCategory::Weights), name), use);
}

Tensor WeightLoader::rows(const std::string& name, const Shape& full_shape,
                          const std::vector<std::pair<int64_t, int64_t>>& ranges, WeightUse use) const {
  if (!st_) {
    Tensor full = random_full(name, full_shape);
    const int64_t row = full_shape[0] == 0 ? 0 : full.numel() / full_shape[0];
    int64_t total = 0;
    for (auto [a, b] : ranges) total += b - a;
    Shape s = full_shape;
    s[0] = total;
    Tensor out = Tensor::empty(s, DType::F32, MemCategory::Workspace);
    float* o = out.f32();
    for (auto [a, b] : ranges) {
      std::memcpy(o, full.f32() + a * row, static_cast<size_t>((b - a) * row) * sizeof(float));
      o += (b - a) * row;
    }
    return place(out, use);
  }
  st_->expect_shape(name, full_shape, why_);
  return place(finite(st_->load_rows(name, ranges, MemCategory::Weights), name), use);
}

Tensor WeightLoader::cols(const std::string& name, const Shape& full_shape, int64_t c0, int64_t c1,
                          WeightUse use) const {
  if (!st_) {
    Tensor full = random_full(name, full_shape);
    Tensor out = Tensor::empty({full_shape[0], c1 - c0}, DType::F32, MemCategory::Workspace);
    for (int64_t r = 0; r < full_shape[0]; ++r)
      std::memcpy(out.f32() + r * (c1 - c0), full.f32() + r * full_shape[1] + c0, static_cast<size_t>(c1 - c0) * sizeof(float));
    return place(out, use);
  }
  st_->expect_shape(name, full_shape, why_);
  return place(finite(st_->load_cols(name, c0, c1, MemCategory::Weights), name), use);
}

}  // namespace skv
