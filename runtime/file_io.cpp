// file_io.cpp - regular-file-only inputs and atomic, fully checked outputs (see file_io.h).
#include "runtime/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "runtime/check.h"

namespace skv {

namespace {

const char* kind_of(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO (named pipe)";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  return "not a regular file";
}

std::string os_error(int e) { return std::strerror(e); }

std::string folder_of(const std::string& path) {
  const std::string d = std::filesystem::path(path).parent_path().string();
  return d.empty() ? "." : d;
}

// Creates, writes one byte to and removes a probe file in `dir`: catches read-only folders and
// filesystems, missing permissions and a full disk before any work is done.
void probe_writable(const std::string& dir, const std::string& what) {
  static std::atomic<unsigned> counter{0};
  const std::string probe = fmt::format("{}/.scalekv-write-test.{}.{}", dir, ::getpid(), counter++);
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  SKV_CHECK(fd >= 0, "{}: cannot create files there ({})", what, os_error(errno));
  const char byte = 0;
  ssize_t w;
  do w = ::write(fd, &byte, 1); while (w < 0 && errno == EINTR);
  const int werr = errno;
  const int c = ::close(fd);
  const int cerr = errno;
  ::unlink(probe.c_str());
  SKV_CHECK(w == 1, "{}: cannot write there ({})", what, os_error(werr));
  SKV_CHECK(c == 0, "{}: cannot write there ({})", what, os_error(cerr));
}

}  // namespace

int open_input_file(const std::string& path, uint64_t* size) {
  SKV_CHECK(!path.empty(), "an input file name is empty; give the path of a file");
  // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused right after fstat.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    SKV_CHECK(e != ENOENT, "{}: no such file", path);
    SKV_FAIL("{}: cannot open ({})", path, os_error(e));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    SKV_FAIL("{}: cannot stat ({})", path, os_error(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    SKV_FAIL("{}: is {}, not a regular file; give the path of a file", path, kind_of(st.st_mode));
  }
  const int fl = ::fcntl(fd, F_GETFL);
  if (fl >= 0) ::fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  if (size) *size = static_cast<uint64_t>(st.st_size);
  return fd;
}

void check_input_file(const std::string& path) { ::close(open_input_file(path, nullptr)); }

std::string read_input_file(const std::string& path, uint64_t max_bytes) {
  uint64_t size = 0;
  const int fd = open_input_file(path, &size);
  if (size > max_bytes) {
    ::close(fd);
    SKV_FAIL("{}: {} bytes is more than the {} MiB this kind of file may have", path, size, max_bytes >> 20);
  }
  std::string out;
  out.resize(static_cast<size_t>(size));
  size_t got = 0;
  for (;;) {
    if (got == out.size()) {
      if (out.size() >= max_bytes) break;
      out.resize(std::min<uint64_t>(max_bytes, out.size() + 4096));  // the file grew while being read
    }
    const ssize_t r = ::read(fd, out.data() + got, out.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int e = errno;
      ::close(fd);
      SKV_FAIL("{}: read failed ({})", path, os_error(e));
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  ::close(fd);
  out.resize(got);
  return out;
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  SKV_CHECK(!path_.empty(), "an output file name is empty; give the path of a file");
  const std::filesystem::path p(path_);
  const std::string name = p.filename().string();
  SKV_CHECK(!name.empty() && name != "." && name != "..", "{}: names a folder; give the path of a file", path_);
  struct stat st {};
  if (::stat(path_.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    SKV_FAIL("{}: exists and is {}; cannot write a file there", path_, kind_of(st.st_mode));
  const std::string dir = folder_of(path_);
  static std::atomic<unsigned> counter{0};
  for (int attempt = 0;; ++attempt) {
    tmp_ = fmt::format("{}/.{}.tmp.{}.{}", dir, name, ::getpid(), counter++);
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ >= 0) break;
    const int e = errno;
    if (e == EEXIST && attempt < 100) continue;
    tmp_.clear();
    SKV_FAIL("{}: cannot create a file in {} ({})", path_, dir, os_error(e));
  }
}

AtomicFile::~AtomicFile() { abandon(); }

void AtomicFile::abandon() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!tmp_.empty()) ::unlink(tmp_.c_str());
  tmp_.clear();
}

void AtomicFile::write(const void* data, size_t n) {
  SKV_CHECK(fd_ >= 0, "{}: write after the file was closed", path_);
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, std::min<size_t>(n, 1u << 30));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int e = w < 0 ? errno : ENOSPC;
      abandon();
      SKV_FAIL("{}: write failed ({})", path_, os_error(e));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void AtomicFile::commit() {
  SKV_CHECK(fd_ >= 0, "{}: committed twice", path_);
  // fsync before the rename: the name must never point at data still only in the page cache.
  if (::fsync(fd_) != 0 && errno != EINVAL && errno != EROFS) {
    const int e = errno;
    abandon();
    SKV_FAIL("{}: write failed at fsync ({})", path_, os_error(e));
  }
  const int c = ::close(fd_);
  const int ce = errno;
  fd_ = -1;
  if (c != 0) {
    abandon();
    SKV_FAIL("{}: write failed at close ({})", path_, os_error(ce));
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int e = errno;
    abandon();
    SKV_FAIL("{}: cannot rename the finished file into place ({})", path_, os_error(e));
  }
  tmp_.clear();
}

void write_file_atomic(const std::string& path, std::string_view data) {
  AtomicFile f(path);
  f.write(data);
  f.commit();
}

void prepare_output_dir(const std::string& dir, const std::string& option) {
  SKV_CHECK(!dir.empty(), "{} is empty: give the folder to write to, e.g. {} out/", option, option);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  SKV_CHECK(!ec, "{} {}: cannot create the folder ({})", option, dir, ec.message());
  SKV_CHECK(std::filesystem::is_directory(dir, ec), "{} {}: exists and is not a folder", option, dir);
  probe_writable(dir, fmt::format("{} {}", option, dir));
}

void check_output_file(const std::string& path, const std::string& option) {
  SKV_CHECK(!path.empty(), "{} is empty: give the file to write, e.g. {} out.json", option, option);
  std::error_code ec;
  SKV_CHECK(!std::filesystem::is_directory(path, ec), "{} {}: is a folder; give the path of a file", option, path);
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    SKV_FAIL("{} {}: exists and is {}; give the path of a regular file", option, path, kind_of(st.st_mode));
  const std::string dir = folder_of(path);
  SKV_CHECK(std::filesystem::is_directory(dir, ec), "{} {}: the folder {} does not exist", option, path, dir);
  probe_writable(dir, fmt::format("{} {}", option, path));
}

}  // namespace skv
