#include "runtime/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "runtime/check.h"
#include "runtime/hostdevice.h"

namespace skv {

const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

std::string shape_str(const Shape& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Storage::~Storage() {
  if (allocator != nullptr) allocator->deallocate(data, bytes, category);
}

Tensor Tensor::empty(const Shape& shape, DType dt, MemCategory cat, Allocator* alloc, Device dev) {
  for (int64_t d : shape) SKV_CHECK(d >= 0, "negative dimension in shape {}", shape_str(shape));
  Tensor t;
  t.storage_ = std::make_shared<Storage>();
  t.storage_->bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dt);
  t.storage_->category = cat;
  t.storage_->allocator = alloc ? alloc : &Allocator::host();
  t.storage_->device = dev;
  t.storage_->data = t.storage_->allocator->allocate(t.storage_->bytes, cat);
  t.dtype_ = dt;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dt, MemCategory cat) {
  Tensor t = empty(shape, dt, cat);
  std::memset(t.raw(), 0, t.nbytes());
  return t;
}

Tensor Tensor::external(void* data, const Shape& shape, DType dt, std::shared_ptr<void> keepalive) {
  Tensor t;
  t.storage_ = std::make_shared<Storage>();
  t.storage_->data = data;
  t.storage_->bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dt);
  t.storage_->keepalive = std::move(keepalive);
  t.dtype_ = dt;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& shape) {
  SKV_CHECK(static_cast<int64_t>(v.size()) == shape_numel(shape), "from_vector: {} values for shape {}", v.size(),
            shape_str(shape));
  Tensor t = empty(shape);
  std::memcpy(t.raw(), v.data(), v.size() * sizeof(float));
  return t;
}

float* Tensor::f32() const {
  SKV_CHECK(dtype_ == DType::F32, "expected an F32 tensor, got {}", describe());
  return data<float>();
}

Tensor Tensor::reshape(const Shape& shape) const {
  Shape s = shape;
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      SKV_CHECK(infer < 0, "reshape: more than one -1 in {}", shape_str(shape));
      infer = static_cast<int>(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) s[infer] = known == 0 ? 0 : numel() / known;
  SKV_CHECK(shape_numel(s) == numel(), "reshape {} -> {}: element counts differ", shape_str(shape_), shape_str(shape));
  Tensor t = *this;
  t.shape_ = s;
  return t;
}

Tensor Tensor::slice0(int64_t begin, int64_t end) const {
  SKV_CHECK(ndim() >= 1 && 0 <= begin && begin <= end && end <= shape_[0], "slice0 [{}, {}) of {}", begin, end,
            describe());
  Tensor t = *this;
  const int64_t row = shape_[0] == 0 ? 0 : numel() / shape_[0];
  t.offset_ += static_cast<size_t>(begin * row) * dtype_size(dtype_);
  t.shape_[0] = end - begin;
  return t;
}

Tensor Tensor::operator[](int64_t i) const {
  Tensor t = slice0(i, i + 1);
  t.shape_.erase(t.shape_.begin());
  return t;
}

Tensor Tensor::clone(MemCategory cat) const {
  SKV_CHECK(device() == Device::CPU, "clone() of a device tensor; use the backend");
  Tensor t = empty(shape_, dtype_, cat);
  std::memcpy(t.raw(), raw(), nbytes());
  return t;
}

Tensor Tensor::to_f32(MemCategory cat) const {
  SKV_CHECK(device() == Device::CPU, "to_f32() of a device tensor; use the backend");
  Tensor t = empty(shape_, DType::F32, cat);
  float* o = t.data<float>();
  const int64_t n = numel();
  switch (dtype_) {
    case DType::F32: std::memcpy(o, raw(), nbytes()); break;
    case DType::F16: {
      const auto* p = data<uint16_t>();
      for (int64_t i = 0; i < n; ++i) o[i] = f16_to_f32(p[i]);
      break;
    }
    case DType::BF16: {
      const auto* p = data<uint16_t>();
      for (int64_t i = 0; i < n; ++i) o[i] = bf16_to_f32(p[i]);
      break;
    }
    case DType::I64: {
      const auto* p = data<int64_t>();
      for (int64_t i = 0; i < n; ++i) o[i] = static_cast<float>(p[i]);
      break;
    }
    case DType::I32: {
      const auto* p = data<int32_t>();
      for (int64_t i = 0; i < n; ++i) o[i] = static_cast<float>(p[i]);
      break;
    }
    case DType::U8: {
      const auto* p = data<uint8_t>();
      for (int64_t i = 0; i < n; ++i) o[i] = static_cast<float>(p[i]);
      break;
    }
  }
  return t;
}

void Tensor::fill(float v) {
  float* p = f32();
  for (int64_t i = 0, n = numel(); i < n; ++i) p[i] = v;
}

std::vector<float> Tensor::to_vector() const {
  Tensor t = to_f32();
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

std::string Tensor::describe() const { return fmt::format("{}{}", dtype_name(dtype_), shape_str(shape_)); }

int64_t first_non_finite(const float* p, int64_t n) {
  constexpr int64_t kChunk = 4096;
  for (int64_t c = 0; c < n; c += kChunk) {
    const int64_t e = std::min(n, c + kChunk);
    uint32_t any = 0;
    for (int64_t i = c; i < e; ++i) {
      uint32_t b;
      std::memcpy(&b, p + i, 4);
      any |= static_cast<uint32_t>((b & 0x7f800000u) == 0x7f800000u);
    }
    if (any)
      for (int64_t i = c; i < e; ++i)
        if (!std::isfinite(p[i])) return i;
  }
  return -1;
}

void check_finite(const Tensor& t, const std::string& what) {
  if (!t.defined() || t.dtype() != DType::F32 || t.device() != Device::CPU) return;
  const float* p = t.f32();
  const int64_t n = t.numel();
  const int64_t first = first_non_finite(p, n);
  if (first < 0) return;
  int64_t count = 0;
  for (int64_t i = first; i < n; ++i) count += !std::isfinite(p[i]);
  SKV_FAIL("{} holds {} non-finite value{} (first: {} at element {} of {})", what, count, count > 1 ? "s" : "", p[first],
           first, shape_str(t.shape()));
}

bool activation_checks_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("SKV_CHECK_FINITE");
    return !(e && std::string(e) == "0");
  }();
  return on;
}

}  // namespace skv
