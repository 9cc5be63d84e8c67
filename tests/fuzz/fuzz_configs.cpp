// fuzz_configs.cpp - libFuzzer target for the other files users hand to scalekv: VAR and Infinity
// model configs and ScaleKV budget tables (issue 15). The first byte picks the reader, the rest is the
// file. Any input must either load or throw skv::Error with its message - a JSON type error, an
// out_of_range or a wrapped integer that escapes as anything else is a crash here (built with
// AddressSanitizer and UBSan).
#include <cstddef>
#include <cstdint>
#include <string>

#include "kvcache/budget_table.h"
#include "runtime/check.h"
#include "runtime/json_util.h"
#include "runtime/models/infinity_config.h"
#include "runtime/models/var_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  skv::set_warnings_enabled(false);  // unknown keys warn; the fuzzer makes many
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (data[0] % 4) {
      case 0: skv::VarConfig::from_json(skv::parse_json_strict(text, "fuzz.json"), "fuzz.json"); break;
      case 1: skv::InfinityConfig::from_json(skv::parse_json_strict(text, "fuzz.json"), "fuzz.json"); break;
      case 2: skv::parse_budget_table(text, "fuzz.json", 4, skv::Schedule::square({1, 2, 3, 4, 6, 8})); break;
      default:  // the published format against Infinity's 1M schedule, depth 32
        skv::parse_budget_table(text, "fuzz.json", 32, skv::infinity_schedule(1.0, "1M"), 650);
        break;
    }
  } catch (const skv::Error&) {
  }
  return 0;
}
