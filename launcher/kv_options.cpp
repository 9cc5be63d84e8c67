// kv_options.cpp - the KV policy command-line options (see kv_options.h).
#include "launcher/kv_options.h"

#include <cmath>
#include <map>

#include "runtime/allocator.h"  // format_bytes
#include "runtime/check.h"

namespace skv {

void add_kv_options(CLI::App* cmd, KVOptions& o) {
  auto mark = [&o](const char* name) { return [&o, name](const std::string&) { o.given.insert(name); }; };
  cmd->add_option("--kv-policy", o.policy, "KV-cache policy: " + kv_policy_names())->capture_default_str();
  cmd->add_option("--kv-budget", o.budget,
                  "KV budget per layer: a share of the tokens cached before the last scale (10%) or tokens (650); "
                  "default 10%")->each(mark("--kv-budget"));
  cmd->add_option("--kv-budget-table", o.budget_table,
                  "ScaleKV budget table (ours from `scalekv calibrate`, or the published format)");
  cmd->add_option("--scalekv-scoring", o.scoring, "ScaleKV token scoring: reference (released code) or paper")
      ->capture_default_str()->each(mark("--scalekv-scoring"));
  cmd->add_option("--scalekv-calibration", o.calibration,
                  "ScaleKV drafters: online (from the request at the first compressed scale), table, or auto")
      ->capture_default_str()->each(mark("--scalekv-calibration"));
  cmd->add_option("--scalekv-drafters", o.drafters, "ScaleKV drafters per scale (0: ceil(depth / 16))")
      ->capture_default_str()->each(mark("--scalekv-drafters"));
  cmd->add_option("--kv-window", o.window, "Observation window (scalekv, snapkv, pyramidkv); default: the config's kv_window, else 16")
      ->each(mark("--kv-window"));
  cmd->add_option("--kv-sinks", o.sinks, "StreamingLLM sink tokens")->capture_default_str()->each(mark("--kv-sinks"));
}

int64_t parse_byte_size(const std::string& text, const std::string& option) {
  static const std::map<std::string, double> units = {
      {"", 1.0},         {"B", 1.0},           {"KiB", 1024.0},    {"MiB", 1048576.0}, {"GiB", 1073741824.0},
      {"TiB", 1099511627776.0}, {"K", 1024.0}, {"M", 1048576.0},   {"G", 1073741824.0}, {"T", 1099511627776.0},
      {"KB", 1e3},       {"MB", 1e6},          {"GB", 1e9},        {"TB", 1e12}};
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  const std::string num = text.substr(0, i), unit = text.substr(i);
  double v = 0;
  bool ok = !num.empty() && num.find_first_of('.') == num.find_last_of('.') && units.count(unit);
  if (ok) {
    try {
      v = std::stod(num) * units.at(unit);
    } catch (const std::exception&) {
      ok = false;
    }
  }
  SKV_CHECK(ok && std::isfinite(v) && v >= 1 && v < 9.2e18, "{} '{}' is not a memory size: give bytes or a number "
            "with KiB, MiB, GiB (e.g. 512MiB, 2GiB)", option, text);
  return static_cast<int64_t>(std::llround(v));
}

EngineOptions parse_engine_options(const std::string& mode, const std::string& kv_memory, int64_t max_step_tokens,
                                   const std::string& device_memory) {
  EngineOptions eo;
  eo.mode = parse_batch_mode(mode, "--mode");
  SKV_CHECK(!kv_memory.empty() || !device_memory.empty(), "give --kv-memory BYTES (the KV cap requests are admitted "
            "into) or --device-memory BYTES (one device's memory: the engine admits into what the model leaves)");
  if (!kv_memory.empty()) eo.limits.kv_cap_bytes = parse_byte_size(kv_memory, "--kv-memory");
  if (!device_memory.empty()) eo.device_memory_bytes = parse_byte_size(device_memory, "--device-memory");
  SKV_CHECK(max_step_tokens >= 0, "--max-step-tokens {} must be >= 0 (0: no bound)", max_step_tokens);
  eo.limits.max_step_tokens = max_step_tokens;
  return eo;
}

std::string memory_options(const std::string& kv_memory, const std::string& device_memory) {
  std::string s = kv_memory.empty() ? "" : "--kv-memory " + kv_memory;
  if (!device_memory.empty()) s += (s.empty() ? "" : ", ") + std::string("--device-memory ") + device_memory;
  return s;
}

std::string device_memory_summary(const EngineStats& s) {
  if (s.device_memory_bytes <= 0) return "";
  return fmt::format("; {}, measured peak of all bytes {} ({:.0f}%)", device_memory_text(s),
                     format_bytes(s.memory_peak_bytes),
                     100.0 * static_cast<double>(s.memory_peak_bytes) / static_cast<double>(s.device_memory_bytes));
}

}  // namespace skv
