#include "launcher/progress.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "parallel/communicator.h"

namespace skv {

bool progress_enabled() {
  const char* env = std::getenv("SKV_PROGRESS");
  if (env && std::strcmp(env, "0") == 0) return false;
  if (env && std::strcmp(env, "1") == 0) return true;
  return isatty(STDERR_FILENO) != 0;
}

Progress::Progress(std::string label) : label_(std::move(label)), on_(progress_enabled()) {}

Progress::~Progress() {
  if (on_ && dirty_) std::fputc('\n', stderr);
}

void Progress::update(const std::string& text) {
  collective_keepalive();  // every scale of every model: this rank is alive (the watchdog's questions)
  if (!on_) return;
  std::fprintf(stderr, "\r\033[2K%s %s", label_.c_str(), text.c_str());
  std::fflush(stderr);
  dirty_ = true;
}

void Progress::done(const std::string& text) {
  if (!on_) return;
  std::fprintf(stderr, "\r\033[2K%s %s\n", label_.c_str(), text.c_str());
  dirty_ = false;
}

}  // namespace skv
