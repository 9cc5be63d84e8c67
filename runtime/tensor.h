// tensor.h - a small dense tensor: dtype, shape, device, shared storage.
// Tensors are always contiguous (row-major); a view shares storage and differs only by a byte offset
// and a shape (reshape, or a slice along the first axis). Storage is returned to the allocator that
// made it, so the accounting allocator sees every byte's lifetime.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/allocator.h"
#include "runtime/dtype.h"

namespace skv {

enum class Device : uint8_t { CPU, CUDA };
const char* device_name(Device d);

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3, 4]"
int64_t shape_numel(const Shape& s);

struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  MemCategory category = MemCategory::Activations;
  Allocator* allocator = nullptr;    // null: not owned by an allocator (external memory)
  std::shared_ptr<void> keepalive;   // keeps external memory (e.g. a mapped file) alive
  Device device = Device::CPU;
  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage();
};

class Tensor {
 public:
  Tensor() = default;

  // New storage from `alloc` (host allocator by default).
  static Tensor empty(const Shape& shape, DType dt = DType::F32, MemCategory cat = MemCategory::Activations,
                      Allocator* alloc = nullptr, Device dev = Device::CPU);
  static Tensor zeros(const Shape& shape, DType dt = DType::F32, MemCategory cat = MemCategory::Activations);
  // A host tensor over memory owned elsewhere; `keepalive` holds that memory.
  static Tensor external(void* data, const Shape& shape, DType dt, std::shared_ptr<void> keepalive = nullptr);
  static Tensor from_vector(const std::vector<float>& v, const Shape& shape);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device : Device::CPU; }
  MemCategory category() const { return storage_ ? storage_->category : MemCategory::Activations; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[i < 0 ? i + static_cast<int>(shape_.size()) : i]; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }

  void* raw() const { return static_cast<char*>(storage_->data) + offset_; }
  template <class T> T* data() const { return static_cast<T*>(raw()); }
  float* f32() const;  // checked: dtype must be F32

  // Views (no copy).
  Tensor reshape(const Shape& shape) const;
  Tensor slice0(int64_t begin, int64_t end) const;  // rows [begin, end) of the first axis
  Tensor operator[](int64_t i) const;               // row i of the first axis, one axis fewer

  // Host copies.
  Tensor clone(MemCategory cat = MemCategory::Activations) const;
  Tensor to_f32(MemCategory cat = MemCategory::Activations) const;  // F16/BF16/F32/I64/I32/U8 -> F32
  void fill(float v);
  std::vector<float> to_vector() const;  // converted to float

  std::string describe() const;  // "F32[2, 3]"

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;
  DType dtype_ = DType::F32;
  Shape shape_;
};

// Non-finite numbers (issue 15, class 2). first_non_finite: the index of the first NaN or Inf among n
// floats, -1 when all are finite (an exponent-bit test that vectorises; the index is searched only
// after a hit). check_finite throws "<what> holds N non-finite values (first: nan at element i)" for a
// host F32 tensor; tensors of other dtypes or on a device are not checked.
int64_t first_non_finite(const float* p, int64_t n);
void check_finite(const Tensor& t, const std::string& what);
// Whether activations are checked block by block (SKV_CHECK_FINITE=0 turns it off; weights, logits
// and images are always checked).
bool activation_checks_enabled();

}  // namespace skv
