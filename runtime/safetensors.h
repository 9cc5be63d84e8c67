// safetensors.h - memory-mapped reader and a writer for the safetensors format.
// Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}},
// then the data region. The reader validates everything before anything is used (header length,
// JSON, dtypes, shapes, offsets inside the data region, element counts, no overlaps) and names the
// file and tensor in every error. Tensors are read by copy out of the mapping - a rank that loads only
// a shard (rows/columns) touches only those pages, so resident memory follows the shard.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/tensor.h"

namespace skv {

struct TensorEntry {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0;  // byte offsets within the data region
  uint64_t end = 0;
};

class SafeTensors {
 public:
  explicit SafeTensors(const std::string& path);
  ~SafeTensors();
  SafeTensors(const SafeTensors&) = delete;
  SafeTensors& operator=(const SafeTensors&) = delete;

  const std::string& path() const { return path_; }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const TensorEntry& entry(const std::string& name) const;  // throws naming the file when missing
  const std::vector<TensorEntry>& entries() const { return entries_; }  // in data-offset order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  int64_t num_params() const;
  uint64_t file_size() const { return file_size_; }

  // Throws "<file>: tensor '<name>' has shape X, expected Y (<why>)" on mismatch.
  void expect_shape(const std::string& name, const Shape& shape, const std::string& why = "") const;
  // Throws unless the tensor's dtype is a float type (F32/F16/BF16).
  void expect_float(const std::string& name) const;

  // Copies, converted to F32 (float tensors only).
  Tensor load(const std::string& name, MemCategory cat = MemCategory::Weights) const;
  // Rows [r0, r1) of each range of the first axis, concatenated, converted to F32.
  Tensor load_rows(const std::string& name, const std::vector<std::pair<int64_t, int64_t>>& ranges,
                   MemCategory cat = MemCategory::Weights) const;
  // Columns [c0, c1) of the last axis of a 2-D tensor, converted to F32.
  Tensor load_cols(const std::string& name, int64_t c0, int64_t c1, MemCategory cat = MemCategory::Weights) const;
  // Copy with the stored dtype (any dtype).
  Tensor load_raw(const std::string& name, MemCategory cat = MemCategory::Activations) const;

 private:
  const uint8_t* data_of(const TensorEntry& e) const { return base_ + data_start_ + e.begin; }
  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t file_size_ = 0;
  uint64_t data_start_ = 0;
  std::vector<TensorEntry> entries_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Parses and validates a complete in-memory safetensors image (used by the reader and the fuzzer).
// `what` names the source in errors. Returns the entries (sorted by offset) and metadata.
void parse_safetensors(const uint8_t* data, uint64_t size, const std::string& what, std::vector<TensorEntry>* entries,
                       std::map<std::string, std::string>* metadata, uint64_t* data_start);

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace skv
