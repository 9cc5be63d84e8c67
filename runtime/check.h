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
  using std::runtime_error::runtime_error;
};

[[noreturn]] void throw_error(const char* file, int line, const std::string& msg);

}  // namespace skv

#define SKV_CHECK(cond, ...)                                                  \
  do {                                                                        \
    if (!(cond)) ::skv::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__)); \
  } while (0)

#define SKV_FAIL(...) ::skv::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__))
