// file_io.h - the one place scalekv opens files, for reading and for writing.
// Reading: every input (checkpoint, config, budget table, golden, prompts, PNG) is opened with
// open_input_file, which refuses anything but a regular file - a FIFO, a directory, a device or a
// socket - with one line naming the path, and never blocks doing so (O_NONBLOCK until fstat has said
// it is a regular file). Writing: every output is written under a temporary name in its own folder,
// every write, fsync and close is checked, and only a complete file is renamed into place; a failure
// removes the temporary file and throws "<path>: <step> failed (<OS error>)". A file that exists under
// its final name is therefore complete, even after a full disk, a crash or a kill.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace skv {

// Opens `path` read-only and returns the descriptor (the caller closes it); `size` gets the file size.
// Errors: "<path>: no such file", "<path>: is a FIFO, not a regular file", "<path>: cannot open (...)".
int open_input_file(const std::string& path, uint64_t* size);
// Throws unless `path` names a regular file (the same checks, without keeping it open).
void check_input_file(const std::string& path);
// The whole content of a regular file of at most `max_bytes` (a clear error above it).
std::string read_input_file(const std::string& path, uint64_t max_bytes = 256ull << 20);

// Writes one output file atomically: write(), then commit() renames the finished temporary into place.
// Destroying an uncommitted writer removes its temporary file. Each failing step throws naming `path`.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  void write(const void* data, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  void commit();
  const std::string& path() const { return path_; }

 private:
  void abandon();
  std::string path_, tmp_;
  int fd_ = -1;
};

// One call: the whole file at once.
void write_file_atomic(const std::string& path, std::string_view data);

// Makes `dir` (and its parents) and checks that a file can be created in it, before any work starts.
// `option` names the flag in errors ("--out"): "--out is empty: ...", "--out out/: not writable (...)".
void prepare_output_dir(const std::string& dir, const std::string& option);
// Checks that the folder a file `path` will be written to exists and is writable (the file itself is
// written later, atomically). `option` names the flag in errors.
void check_output_file(const std::string& path, const std::string& option);

}  // namespace skv
