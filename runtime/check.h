// check.h - the one way scalekv reports a broken precondition.
// SKV_CHECK(cond, fmt, args...) throws skv::Error with a one-line, user-readable message; the source
// location is appended in brackets so a bug report still points at the line. Every boundary a user's
// input crosses (files, configs, CLI values, requests) is guarded with it; the launcher prints
// "error: <what()>" and exits non-zero.
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace skv {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what), message_(what) {}
  Error(const std::string& what, std::string message) : std::runtime_error(what), message_(std::move(message)) {}
  // The message without the source location (for a caller that adds context and rethrows).
  const std::string& message() const { return message_; }

 private:
  std::string message_;
};

[[noreturn]] void throw_error(const char* file, int line, const std::string& msg);

// A harmless problem (an option that has no effect, an unknown config key): one line "warning: <msg>"
// on stderr, printed by one rank of a job only (set_warnings_enabled(false) on the others).
void warn(const std::string& msg);
void set_warnings_enabled(bool on);

}  // namespace skv

#define SKV_CHECK(cond, ...)                                                  \
  do {                                                                        \
    if (!(cond)) ::skv::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__)); \
  } while (0)

namespace skv {

// Checked 64-bit arithmetic for sizes computed from user input (memory plans, byte counts): an overflow
// is an error naming `what`, never a wrapped or negative figure.
inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r))
    throw_error(__FILE__, __LINE__, fmt::format("{}: {} x {} overflows 64 bits (more than 8 EiB)", what, a, b));
  return r;
}
inline int64_t checked_add(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r))
    throw_error(__FILE__, __LINE__, fmt::format("{}: {} + {} overflows 64 bits (more than 8 EiB)", what, a, b));
  return r;
}

}  // namespace skv

#define SKV_WARN(...) ::skv::warn(::fmt::format(__VA_ARGS__))

#define SKV_FAIL(...) ::skv::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__))
