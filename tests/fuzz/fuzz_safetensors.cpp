// fuzz_safetensors.cpp - libFuzzer target for the safetensors header parser.
// Any input must either parse into entries that lie inside the data region without overlaps, or throw
// skv::Error - never crash, hang or read out of bounds (built with AddressSanitizer).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "runtime/check.h"
#include "runtime/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<skv::TensorEntry> entries;
  std::map<std::string, std::string> meta;
  uint64_t start = 0;
  try {
    skv::parse_safetensors(data, size, "fuzz", &entries, &meta, &start);
  } catch (const skv::Error&) {
    return 0;
  }
  uint64_t prev_end = 0;
  for (const auto& e : entries) {
    if (e.begin > e.end || start + e.end > size) std::abort();
    if (e.begin != e.end && e.begin < prev_end) std::abort();
    if (e.begin != e.end) prev_end = e.end;
  }
  return 0;
}
