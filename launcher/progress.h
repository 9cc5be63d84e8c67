// progress.h - per-scale / per-image progress on a terminal, silence in logs.
// A Progress line is redrawn in place on stderr only when stderr is a TTY (and SKV_PROGRESS is not
// 0); when output goes to a file (Slurm logs, CI) nothing is printed, so logs stay readable.
#pragma once

#include <string>

namespace skv {

bool progress_enabled();

class Progress {
 public:
  explicit Progress(std::string label);
  ~Progress();
  void update(const std::string& text);  // redraws the line
  void done(const std::string& text);    // final line, newline

 private:
  std::string label_;
  bool on_;
  bool dirty_ = false;
};

}  // namespace skv
