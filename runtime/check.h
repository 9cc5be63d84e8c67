// check.h - the one way scalekv reports a broken precondition.
// SKV_CHECK(cond, fmt, args...) throws skv::Error with a one-line, user-readable message; the source
// location is appended in brackets so a bug report still points at the line. Every boundary a user's
// input crosses (files, configs, CLI values, requests) is guarded with it; the launcher prints
// "error: <what()>" and exits non-zero.
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>

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

#define SKV_WARN(...) ::skv::warn(::fmt::format(__VA_ARGS__))

#define SKV_FAIL(...) ::skv::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__))
