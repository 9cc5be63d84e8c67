// test_t5_encoder.cpp - the parts of the T5 text encoder that need no checkpoint: the relative position
// buckets (transformers' formula, float32), UTF-8 validation, and the prompts file as
// scripts/encode_prompts.py reads it. The model and tokenizer against transformers: tests/t5/.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "runtime/models/t5_encoder.h"
#include "test_util.h"

namespace skv {
namespace {

TEST(T5Encoder, RelativeBucketsMatchTransformers) {
  // T5 defaults (32 buckets, max distance 128): 16 per direction, 8 exact, then log-spaced up to 128.
  EXPECT_EQ(t5_relative_bucket(0, 32, 128), 0);
  EXPECT_EQ(t5_relative_bucket(-1, 32, 128), 1);
  EXPECT_EQ(t5_relative_bucket(1, 32, 128), 17);
  EXPECT_EQ(t5_relative_bucket(-7, 32, 128), 7);
  EXPECT_EQ(t5_relative_bucket(-8, 32, 128), 8);
  EXPECT_EQ(t5_relative_bucket(-12, 32, 128), 9);    // 8 + int(log(1.5) / log(16) * 8) = 8 + 1
  EXPECT_EQ(t5_relative_bucket(-127, 32, 128), 15);  // 8 + int(7.98)
  EXPECT_EQ(t5_relative_bucket(-128, 32, 128), 15);  // clamped to 15
  EXPECT_EQ(t5_relative_bucket(-500, 32, 128), 15);
  EXPECT_EQ(t5_relative_bucket(500, 32, 128), 31);
  EXPECT_EQ(t5_relative_bucket(32, 32, 128), 16 + 12);  // 8 + int(log(4) / log(16) * 8) = 8 + 4
}

TEST(T5Encoder, Utf8Validation) {
  EXPECT_NO_THROW(check_utf8("caf\xc3\xa9 \xf0\x9f\x98\x80 \xe4\xb8\xad", "x"));
  EXPECT_NE(test::error_of([] { check_utf8("caf\xe9!", "p"); }).find("p: not valid UTF-8 (byte 3 is 0xe9"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { check_utf8("\xc0\xaf", "p"); }).find("not valid UTF-8 (byte 0"), std::string::npos);
  EXPECT_NE(test::error_of([] { check_utf8("\xed\xa0\x80", "p"); }).find("surrogate"), std::string::npos);
  EXPECT_NE(test::error_of([] { check_utf8("ab\xe2\x82", "p"); }).find("byte 2"), std::string::npos);
}

TEST(T5Encoder, PromptsFileReadsLikeEncodePrompts) {
  const std::string path = ::testing::TempDir() + "skv_t5_prompts.txt";
  {
    std::ofstream f(path, std::ios::binary);
    f << "  first prompt \t\r\n\n \xe3\x80\x80\nsecond\rthird\x1f\nfourth  two  spaces";
  }
  const auto p = read_prompts_file(path);
  EXPECT_EQ(p, (std::vector<std::string>{"first prompt", "second", "third", "fourth  two  spaces"}));
  {
    std::ofstream f(path, std::ios::binary);
    f << "ok\nbad \xff\n";
  }
  EXPECT_NE(test::error_of([&] { read_prompts_file(path); }).find("line 2: not valid UTF-8"), std::string::npos);
  {
    std::ofstream f(path, std::ios::binary);
    f << "\n \n\t\n";
  }
  EXPECT_NE(test::error_of([&] { read_prompts_file(path); }).find("no prompts"), std::string::npos);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace skv
