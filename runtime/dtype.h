// dtype.h - element types a tensor can hold, and their safetensors names.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace skv {

enum class DType : uint8_t { F32, F16, BF16, I64, I32, U8 };

size_t dtype_size(DType t);
std::string_view dtype_name(DType t);               // "F32", "F16", ... (safetensors spelling)
bool parse_dtype(std::string_view s, DType* out);   // accepts the safetensors spelling; false if unknown
DType dtype_from_cli(const std::string& s);         // "f32|fp32|float32|f16|fp16|bf16" -> DType, throws otherwise

}  // namespace skv
