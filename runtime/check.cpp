#include "runtime/check.h"

#include <atomic>
#include <cstdio>
#include <cstring>

namespace skv {

void throw_error(const char* file, int line, const std::string& msg) {
  const char* base = std::strrchr(file, '/');
  throw Error(fmt::format("{} [{}:{}]", msg, base ? base + 1 : file, line), msg);
}

namespace {
std::atomic<bool> g_warnings{true};
}

void set_warnings_enabled(bool on) { g_warnings = on; }

void warn(const std::string& msg) {
  if (g_warnings) std::fprintf(stderr, "warning: %s\n", msg.c_str());
}

}  // namespace skv
