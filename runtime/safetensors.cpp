#include "runtime/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "runtime/check.h"
#include "runtime/file_io.h"
#include "runtime/json_util.h"
#include "runtime/hostdevice.h"

namespace skv {

namespace {

constexpr uint64_t kMaxHeader = 100ull << 20;  // the reference implementation's limit

bool is_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

void convert_to_f32(const uint8_t* src, DType t, int64_t n, float* dst) {
  switch (t) {
    case DType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); break;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      break;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      break;
    default: SKV_FAIL("internal: convert_to_f32 of {}", dtype_name(t));
  }
}

}  // namespace

void parse_safetensors(const uint8_t* data, uint64_t size, const std::string& what, std::vector<TensorEntry>* entries,
                       std::map<std::string, std::string>* metadata, uint64_t* data_start) {
  SKV_CHECK(size >= 8, "{}: file is too short ({} bytes) to be safetensors (needs an 8-byte header length)", what,
            size);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  SKV_CHECK(n <= kMaxHeader, "{}: header length {} is larger than the 100 MiB limit (not a safetensors file?)", what,
            n);
  SKV_CHECK(n <= size - 8, "{}: header length {} runs past the end of the file ({} bytes): truncated file?", what,
            n, size);
  // Strict: a tensor name (or any key) that appears twice is refused, as the reference implementation
  // does - nlohmann alone would keep the last one silently.
  const nlohmann::json h = parse_json_strict(
      std::string_view(reinterpret_cast<const char*>(data) + 8, static_cast<size_t>(n)), what + ": header", "tensor");
  SKV_CHECK(h.is_object(), "{}: header must be a JSON object", what);
  const uint64_t data_size = size - 8 - n;
  entries->clear();
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      SKV_CHECK(v.is_object(), "{}: __metadata__ must be an object of strings", what);
      for (auto m = v.begin(); m != v.end(); ++m) {
        SKV_CHECK(m.value().is_string(), "{}: __metadata__ value '{}' is not a string", what, m.key());
        if (metadata) (*metadata)[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    SKV_CHECK(v.is_object(), "{}: tensor '{}': entry is not an object", what, name);
    SKV_CHECK(v.contains("dtype") && v["dtype"].is_string(), "{}: tensor '{}': missing dtype", what, name);
    SKV_CHECK(v.contains("shape") && v["shape"].is_array(), "{}: tensor '{}': missing shape", what, name);
    SKV_CHECK(v.contains("data_offsets") && v["data_offsets"].is_array() && v["data_offsets"].size() == 2,
              "{}: tensor '{}': data_offsets must be [begin, end]", what, name);
    TensorEntry e;
    e.name = name;
    const std::string dt = v["dtype"].get<std::string>();
    SKV_CHECK(parse_dtype(dt, &e.dtype), "{}: tensor '{}': unsupported dtype '{}' (F32, F16, BF16, I64, I32, U8)",
              what, name, dt);
    uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      SKV_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0),
                "{}: tensor '{}': shape entries must be non-negative integers", what, name);
      const uint64_t dd = d.get<uint64_t>();
      SKV_CHECK(dd < (1ull << 40) && (dd == 0 || numel <= (1ull << 50) / dd), "{}: tensor '{}': shape is too large",
                what, name);
      numel *= dd;
      e.shape.push_back(static_cast<int64_t>(dd));
    }
    for (const auto& o : v["data_offsets"])
      SKV_CHECK(o.is_number_unsigned() || (o.is_number_integer() && o.get<int64_t>() >= 0),
                "{}: tensor '{}': data_offsets must be non-negative integers", what, name);
    e.begin = v["data_offsets"][0].get<uint64_t>();
    e.end = v["data_offsets"][1].get<uint64_t>();
    SKV_CHECK(e.begin <= e.end, "{}: tensor '{}': data_offsets [{}, {}] are reversed", what, name, e.begin, e.end);
    SKV_CHECK(e.end <= data_size, "{}: tensor '{}': data_offsets [{}, {}] run past the data region ({} bytes): "
              "truncated file?", what, name, e.begin, e.end, data_size);
    SKV_CHECK(e.end - e.begin == numel * dtype_size(e.dtype),
              "{}: tensor '{}': {} bytes in data_offsets but dtype {} and shape {} need {}", what, name,
              e.end - e.begin, dt, shape_str(e.shape), numel * dtype_size(e.dtype));
    entries->push_back(std::move(e));
  }
  std::sort(entries->begin(), entries->end(),
            [](const TensorEntry& a, const TensorEntry& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  for (size_t i = 1; i < entries->size(); ++i) {
    const auto& a = (*entries)[i - 1];
    const auto& b = (*entries)[i];
    SKV_CHECK(b.begin >= a.end || a.begin == a.end || b.begin == b.end,
              "{}: tensor '{}': data_offsets [{}, {}] overlap tensor '{}' [{}, {}]", what, b.name, b.begin, b.end,
              a.name, a.begin, a.end);
  }
  *data_start = 8 + n;
}

SafeTensors::SafeTensors(const std::string& path) : path_(path) {
  const int fd = open_input_file(path, &file_size_);  // regular files only; never blocks on a FIFO
  if (file_size_ > 0) {
    void* p = ::mmap(nullptr, file_size_, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    SKV_CHECK(p != MAP_FAILED, "{}: mmap failed ({})", path, std::strerror(errno));
    base_ = static_cast<const uint8_t*>(p);
  } else {
    ::close(fd);
  }
  try {
    parse_safetensors(base_, file_size_, path, &entries_, &metadata_, &data_start_);
  } catch (...) {
    if (base_) ::munmap(const_cast<uint8_t*>(base_), file_size_);
    base_ = nullptr;
    throw;
  }
  for (size_t i = 0; i < entries_.size(); ++i) index_[entries_[i].name] = i;
}

SafeTensors::~SafeTensors() {
  if (base_) ::munmap(const_cast<uint8_t*>(base_), file_size_);
}

const TensorEntry& SafeTensors::entry(const std::string& name) const {
  auto it = index_.find(name);
  SKV_CHECK(it != index_.end(), "{}: missing tensor '{}'", path_, name);
  return entries_[it->second];
}

int64_t SafeTensors::num_params() const {
  int64_t n = 0;
  for (const auto& e : entries_) n += shape_numel(e.shape);
  return n;
}

void SafeTensors::expect_shape(const std::string& name, const Shape& shape, const std::string& why) const {
  const auto& e = entry(name);
  SKV_CHECK(e.shape == shape, "{}: tensor '{}' has shape {}, expected {}{}", path_, name, shape_str(e.shape),
            shape_str(shape), why.empty() ? "" : " (" + why + ")");
}

void SafeTensors::expect_float(const std::string& name) const {
  const auto& e = entry(name);
  SKV_CHECK(is_float(e.dtype), "{}: tensor '{}' has dtype {}, expected a float type (F32, F16 or BF16)", path_, name,
            dtype_name(e.dtype));
}

Tensor SafeTensors::load(const std::string& name, MemCategory cat) const {
  expect_float(name);
  const auto& e = entry(name);
  Tensor t = Tensor::empty(e.shape, DType::F32, cat);
  convert_to_f32(data_of(e), e.dtype, t.numel(), t.data<float>());
  return t;
}

Tensor SafeTensors::load_rows(const std::string& name, const std::vector<std::pair<int64_t, int64_t>>& ranges,
                              MemCategory cat) const {
  expect_float(name);
  const auto& e = entry(name);
  SKV_CHECK(!e.shape.empty(), "{}: tensor '{}' is a scalar; cannot take rows", path_, name);
  const int64_t row = e.shape[0] == 0 ? 0 : shape_numel(e.shape) / e.shape[0];
  int64_t rows = 0;
  for (auto [a, b] : ranges) {
    SKV_CHECK(0 <= a && a <= b && b <= e.shape[0], "{}: tensor '{}': rows [{}, {}) outside {}", path_, name, a, b,
              shape_str(e.shape));
    rows += b - a;
  }
  Shape s = e.shape;
  s[0] = rows;
  Tensor t = Tensor::empty(s, DType::F32, cat);
  float* o = t.data<float>();
  const size_t es = dtype_size(e.dtype);
  for (auto [a, b] : ranges) {
    convert_to_f32(data_of(e) + static_cast<size_t>(a * row) * es, e.dtype, (b - a) * row, o);
    o += (b - a) * row;
  }
  return t;
}

Tensor SafeTensors::load_cols(const std::string& name, int64_t c0, int64_t c1, MemCategory cat) const {
  expect_float(name);
  const auto& e = entry(name);
  SKV_CHECK(e.shape.size() == 2, "{}: tensor '{}' is not 2-D; cannot take columns", path_, name);
  SKV_CHECK(0 <= c0 && c0 <= c1 && c1 <= e.shape[1], "{}: tensor '{}': columns [{}, {}) outside {}", path_, name, c0,
            c1, shape_str(e.shape));
  Tensor t = Tensor::empty({e.shape[0], c1 - c0}, DType::F32, cat);
  const size_t es = dtype_size(e.dtype);
  for (int64_t r = 0; r < e.shape[0]; ++r)
    convert_to_f32(data_of(e) + static_cast<size_t>(r * e.shape[1] + c0) * es, e.dtype, c1 - c0,
                   t.data<float>() + r * (c1 - c0));
  return t;
}

Tensor SafeTensors::load_raw(const std::string& name, MemCategory cat) const {
  const auto& e = entry(name);
  Tensor t = Tensor::empty(e.shape, e.dtype, cat);
  if (t.nbytes()) std::memcpy(t.raw(), data_of(e), t.nbytes());
  return t;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t off = 0;
  for (const auto& [name, t] : tensors) {
    SKV_CHECK(t.device() == Device::CPU, "write_safetensors: tensor '{}' is not on the host", name);
    h[name] = {{"dtype", std::string(dtype_name(t.dtype()))}, {"shape", t.shape()}, {"data_offsets", {off, off + t.nbytes()}}};
    off += t.nbytes();
  }
  std::string header = h.dump();
  while (header.size() % 8 != 0) header.push_back(' ');
  AtomicFile f(path);  // a temporary name until every byte is written: no half checkpoint under `path`
  uint64_t n = header.size();
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  f.write(len, 8);
  f.write(header);
  for (const auto& [name, t] : tensors) f.write(t.raw(), t.nbytes());
  f.commit();
}

}  // namespace skv
