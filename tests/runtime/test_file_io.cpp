// Hostile inputs, classes 1, 9 and 11 at the library level: inputs must be regular files (refused at
// once otherwise, never blocking), JSON keys may appear only once, and outputs are written under a
// temporary name, every write checked, so that a file under its final name is complete.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>

#include "runtime/file_io.h"
#include "runtime/json_util.h"
#include "tests/test_util.h"

namespace skv {

namespace {

using test::error_of;

std::string tmp_dir(const std::string& name) {
  const auto d = std::filesystem::temp_directory_path() / ("skv_fileio_" + std::to_string(::getpid()) + "_" + name);
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d.string();
}

int count_entries(const std::string& dir) {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

}  // namespace

TEST(FileIO, InputsMustBeRegularFiles) {
  const std::string d = tmp_dir("inputs");
  const std::string fifo = d + "/config.json";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  // A FIFO with no writer: open() without O_NONBLOCK would wait forever.
  std::string e = error_of([&] { read_json_file(fifo); });
  EXPECT_NE(e.find(fifo + ": is a FIFO (named pipe), not a regular file"), std::string::npos) << e;
  e = error_of([&] { read_input_file(d); });
  EXPECT_NE(e.find(d + ": is a directory"), std::string::npos) << e;
  e = error_of([&] { read_input_file("/dev/null"); });
  EXPECT_NE(e.find("/dev/null: is a character device"), std::string::npos) << e;
  e = error_of([&] { check_input_file(d + "/none.json"); });
  EXPECT_NE(e.find(d + "/none.json: no such file"), std::string::npos) << e;
  e = error_of([&] { read_input_file(""); });
  EXPECT_NE(e.find("input file name is empty"), std::string::npos) << e;
  std::ofstream(d + "/big.json") << std::string(2048, ' ');
  e = error_of([&] { read_input_file(d + "/big.json", 1024); });
  EXPECT_NE(e.find("big.json: 2048 bytes is more than"), std::string::npos) << e;
  std::filesystem::remove_all(d);
}

TEST(FileIO, JsonKeysMayAppearOnlyOnce) {
  EXPECT_NE(error_of([] { parse_json_strict(R"({"depth": 4, "depth": 6})", "c.json"); })
                .find("c.json: key 'depth' appears twice"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_json_strict(R"({"a": {"x": 1, "x": 2}})", "c.json"); })
                .find("c.json: key 'x' appears twice in 'a'"),
            std::string::npos);
  // The same key in two objects of an array, or in two different objects, is fine.
  EXPECT_EQ(error_of([] { parse_json_strict(R"({"a": [{"x": 1}, {"x": 2}], "b": {"x": 3}})", "c.json"); }), "");
  EXPECT_NE(error_of([] { parse_json_strict("{", "c.json"); }).find("c.json: not valid JSON"), std::string::npos);
}

TEST(FileIO, AtomicFileAppearsOnlyWhenComplete) {
  const std::string d = tmp_dir("atomic");
  const std::string p = d + "/out.json";
  {
    AtomicFile f(p);
    f.write("half");
    EXPECT_FALSE(std::filesystem::exists(p)) << "the final name appears only at commit";
  }  // destroyed uncommitted: the temporary is removed
  EXPECT_EQ(count_entries(d), 0);
  write_file_atomic(p, "complete\n");
  std::ifstream in(p);
  std::string s;
  std::getline(in, s);
  EXPECT_EQ(s, "complete");
  EXPECT_EQ(count_entries(d), 1);
  std::filesystem::remove_all(d);
}

TEST(FileIO, FailingWritesNameTheFileAndTheOsError) {
  const std::string d = tmp_dir("fail");
  std::string e = error_of([&] { write_file_atomic(d + "/missing/x.png", "x"); });
  EXPECT_NE(e.find(d + "/missing/x.png: cannot create a file in " + d + "/missing (No such file or directory)"),
            std::string::npos) << e;
  e = error_of([&] { write_file_atomic("/dev/full", "x"); });
  EXPECT_NE(e.find("/dev/full: exists and is a character device"), std::string::npos) << e;
  e = error_of([&] { write_file_atomic(d, "x"); });
  EXPECT_NE(e.find(d + ": exists and is a directory"), std::string::npos) << e;
  // A write past RLIMIT_FSIZE fails with EFBIG (SIGXFSZ ignored): the stand-in for a full disk.
  struct rlimit old {};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  auto prev = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit lim = old;
  lim.rlim_cur = 4096;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
  e = error_of([&] { write_file_atomic(d + "/big.png", std::string(10000, 'x')); });
  setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, prev);
  EXPECT_NE(e.find(d + "/big.png: write failed (File too large)"), std::string::npos) << e;
  EXPECT_EQ(count_entries(d), 0) << "neither the file nor its temporary is left behind";
  std::filesystem::remove_all(d);
}

TEST(FileIO, OutputFoldersAreCheckedBeforeWork) {
  std::string e = error_of([] { prepare_output_dir("", "--out"); });
  EXPECT_NE(e.find("--out is empty: give the folder to write to, e.g. --out out/"), std::string::npos) << e;
  const std::string d = tmp_dir("outdir");
  std::ofstream(d + "/file") << "x";
  e = error_of([&] { prepare_output_dir(d + "/file", "--out"); });
  EXPECT_NE(e.find("--out " + d + "/file: cannot create the folder"), std::string::npos) << e;
  EXPECT_EQ(error_of([&] { prepare_output_dir(d + "/a/b", "--out"); }), "");
  EXPECT_EQ(count_entries(d + "/a/b"), 0) << "the probe file is removed";
  e = error_of([&] { check_output_file(d + "/nodir/t.json", "--out"); });
  EXPECT_NE(e.find("the folder " + d + "/nodir does not exist"), std::string::npos) << e;
  e = error_of([&] { check_output_file(d, "--out"); });
  EXPECT_NE(e.find("is a folder; give the path of a file"), std::string::npos) << e;
  std::filesystem::remove_all(d);
}

}  // namespace skv
