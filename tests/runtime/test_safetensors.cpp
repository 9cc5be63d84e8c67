// Every malformed file must give a one-line error naming the file and, where there is one, the tensor.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <sys/stat.h>
#include <unistd.h>

#include "runtime/check.h"
#include "runtime/safetensors.h"

namespace skv {

namespace {

std::string tmp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("skv_test_" + std::to_string(::getpid()) + "_" + name)).string();
}

void write_raw(const std::string& path, const std::string& header, const std::string& data, int64_t claimed = -1) {
  std::ofstream f(path, std::ios::binary);
  uint64_t n = claimed >= 0 ? static_cast<uint64_t>(claimed) : header.size();
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>(n >> (8 * i)));
  f << header << data;
}

std::string error_of(const std::string& path) {
  try {
    SafeTensors st(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(SafeTensors, RoundTripsEveryDtype) {
  const std::string p = tmp_path("roundtrip.safetensors");
  Tensor a = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::empty({3}, DType::I64);
  for (int i = 0; i < 3; ++i) b.data<int64_t>()[i] = 10 + i;
  Tensor c = Tensor::empty({2}, DType::BF16);
  c.data<uint16_t>()[0] = 0x3f80;
  c.data<uint16_t>()[1] = 0x4000;
  write_safetensors(p, {{"a", a}, {"b", b}, {"c", c}}, {{"format", "pt"}});
  SafeTensors st(p);
  EXPECT_EQ(st.entries().size(), 3u);
  EXPECT_EQ(st.metadata().at("format"), "pt");
  EXPECT_EQ(st.num_params(), 11);
  EXPECT_EQ(st.load("a").to_vector(), a.to_vector());
  EXPECT_EQ(st.load_raw("b").data<int64_t>()[2], 12);
  EXPECT_EQ(st.load("c").to_vector(), (std::vector<float>{1.0f, 2.0f}));
  EXPECT_EQ(st.load_rows("a", {{1, 2}}).to_vector(), (std::vector<float>{4, 5, 6}));
  EXPECT_EQ(st.load_cols("a", 1, 3).to_vector(), (std::vector<float>{2, 3, 5, 6}));
  std::remove(p.c_str());
}

TEST(SafeTensors, RejectsTruncatedFile) {
  const std::string p = tmp_path("trunc.safetensors");
  write_raw(p, R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(8, '\0'));
  const std::string e = error_of(p);
  EXPECT_NE(e.find(p), std::string::npos) << e;
  EXPECT_NE(e.find("'w'"), std::string::npos) << e;
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;
  write_raw(p, "", "", -1);
  std::filesystem::resize_file(p, 5);
  EXPECT_NE(error_of(p).find("too short"), std::string::npos);
  std::remove(p.c_str());
}

TEST(SafeTensors, RejectsOversizedHeader) {
  const std::string p = tmp_path("bighdr.safetensors");
  write_raw(p, "{}", "", 1ll << 40);
  EXPECT_NE(error_of(p).find("100 MiB"), std::string::npos);
  write_raw(p, "{}", "", 1000);
  EXPECT_NE(error_of(p).find("past the end"), std::string::npos);
  std::remove(p.c_str());
}

TEST(SafeTensors, RejectsBadJsonAndBadEntries) {
  const std::string p = tmp_path("badjson.safetensors");
  write_raw(p, "{not json", "");
  EXPECT_NE(error_of(p).find("not valid JSON"), std::string::npos);
  write_raw(p, R"({"w":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0'));
  EXPECT_NE(error_of(p).find("unsupported dtype 'F99'"), std::string::npos);
  write_raw(p, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", std::string(4, '\0'));
  EXPECT_NE(error_of(p).find("need 8"), std::string::npos);
  write_raw(p, R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", std::string(4, '\0'));
  EXPECT_NE(error_of(p).find("non-negative"), std::string::npos);
  write_raw(p, R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", std::string(4, '\0'));
  EXPECT_NE(error_of(p).find("reversed"), std::string::npos);
  std::remove(p.c_str());
}

TEST(SafeTensors, RejectsOverlappingOffsets) {
  const std::string p = tmp_path("overlap.safetensors");
  write_raw(p,
            R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
            std::string(12, '\0'));
  const std::string e = error_of(p);
  EXPECT_NE(e.find("overlap"), std::string::npos) << e;
  EXPECT_NE(e.find("'a'"), std::string::npos) << e;
  std::remove(p.c_str());
}

TEST(SafeTensors, ShapeAndDtypeExpectationsNameTheTensor) {
  const std::string p = tmp_path("expect.safetensors");
  Tensor i = Tensor::empty({2}, DType::I64);
  write_safetensors(p, {{"w", Tensor::from_vector({1, 2, 3, 4}, {2, 2})}, {"idx", i}});
  SafeTensors st(p);
  try {
    st.expect_shape("w", {4, 4}, "embed_dim=4");
    FAIL();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("'w' has shape [2, 2], expected [4, 4] (embed_dim=4)"), std::string::npos) << m;
  }
  try {
    st.load("idx");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'idx' has dtype I64, expected a float type"), std::string::npos);
  }
  EXPECT_THROW(st.entry("missing"), Error);
  std::remove(p.c_str());
}

TEST(SafeTensors, MissingFileIsAClearError) {
  EXPECT_NE(error_of("/nonexistent/x.safetensors").find("/nonexistent/x.safetensors: no such file"), std::string::npos);
}

// Hostile input, class 9: a name that appears twice is refused (the reference implementation does;
// nlohmann alone keeps the last one), naming the file and the tensor.
TEST(SafeTensors, RejectsDuplicateTensorNames) {
  const std::string p = tmp_path("dup.safetensors");
  write_raw(p,
            R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
            std::string(8, '\0'));
  std::string e = error_of(p);
  EXPECT_NE(e.find(p), std::string::npos) << e;
  EXPECT_NE(e.find("tensor 'w' appears twice"), std::string::npos) << e;
  write_raw(p, R"({"w":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0'));
  e = error_of(p);
  EXPECT_NE(e.find("key 'dtype' appears twice in 'w'"), std::string::npos) << e;
  write_raw(p, R"({"__metadata__":{"a":"1","a":"2"}})", "");
  EXPECT_NE(error_of(p).find("key 'a' appears twice in '__metadata__'"), std::string::npos);
  std::remove(p.c_str());
}

// Hostile input, class 1: a FIFO, a directory or a device is refused at once, never read (a FIFO would
// block forever in open()).
TEST(SafeTensors, RefusesSpecialFilesWithoutBlocking) {
  const std::string fifo = tmp_path("fifo.safetensors");
  std::remove(fifo.c_str());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::string e = error_of(fifo);
  EXPECT_NE(e.find(fifo + ": is a FIFO (named pipe), not a regular file"), std::string::npos) << e;
  std::remove(fifo.c_str());
  const std::string dir = tmp_path("dir.safetensors");
  std::filesystem::create_directories(dir);
  e = error_of(dir);
  EXPECT_NE(e.find(dir + ": is a directory, not a regular file"), std::string::npos) << e;
  std::filesystem::remove(dir);
  e = error_of("/dev/zero");
  EXPECT_NE(e.find("/dev/zero: is a character device, not a regular file"), std::string::npos) << e;
}

}  // namespace skv
