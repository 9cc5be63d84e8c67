// test_t5_golden.cpp - the C++ T5 tokenizer and encoder against transformers on the tiny golden that
// scripts/make_t5_golden.py writes at test time (SKV_T5_GOLDEN = its folder; ctest's t5_golden_make
// fixture makes it). Token ids must equal T5TokenizerFast's exactly; last_hidden_state must be within
// 1e-4 of T5EncoderModel's, relative to the prompt's largest value, for the F32, sharded, BF16 and F16
// checkpoints. The same binary runs on 1 rank and under mpiexec -n 2 (the encoder split over the
// world's ranks: TP = the number of ranks).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "parallel/communicator.h"
#include "runtime/file_io.h"
#include "runtime/models/infinity_text.h"
#include "runtime/models/t5_encoder.h"

namespace fs = std::filesystem;

namespace skv {
namespace {

std::string golden_dir() {
  const char* d = std::getenv("SKV_T5_GOLDEN");
  return d ? d : "";
}

nlohmann::json read_json(const std::string& p) { return nlohmann::json::parse(read_input_file(p)); }

std::unique_ptr<Communicator> world() {
#ifdef SKV_T5_MPI
  return make_mpi_world_communicator();
#else
  return make_local_communicator();
#endif
}

class T5Golden : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = golden_dir();
    ASSERT_FALSE(dir_.empty()) << "SKV_T5_GOLDEN is not set (ctest sets it; scripts/make_t5_golden.py makes the folder)";
    ASSERT_TRUE(fs::exists(dir_ + "/ids.json")) << dir_ << ": no golden (run scripts/make_t5_golden.py)";
    prompts_ = read_json(dir_ + "/prompts.json").get<std::vector<std::string>>();
    const auto ids = read_json(dir_ + "/ids.json");
    fast_ = ids["fast"].get<std::vector<std::vector<int64_t>>>();
    spm_ = ids["spm"].get<std::vector<std::vector<int64_t>>>();
    ASSERT_EQ(fast_.size(), prompts_.size());
  }
  void check_ids(const std::string& tokdir) {
    T5Tokenizer tok(tokdir);
    int diff_from_spm = 0;
    for (size_t i = 0; i < prompts_.size(); ++i) {
      const auto got = tok.encode(prompts_[i], 512);
      EXPECT_EQ(got, fast_[i]) << tokdir << ": prompt " << i << " '" << prompts_[i].substr(0, 60) << "'";
      diff_from_spm += fast_[i] != spm_[i];
    }
    // The golden must exercise the cases where plain SentencePiece is wrong (trailing spaces, special tokens).
    EXPECT_GE(diff_from_spm, 6);
  }
  void check_encoder(const std::string& variant, int* tp_out = nullptr) {
    auto comm = world();
    if (tp_out) *tp_out = comm->size();
    T5TextEncoder te(dir_ + "/" + variant, cpu_backend(), *comm);
    EXPECT_EQ(te.enc.weight_bytes(), t5_memory(te.cfg, comm->size(), DType::F32, 1).weights);
    const InfinityText got = te.encode(prompts_);
    const InfinityText ref = load_infinity_text(dir_ + "/" + variant + ".ref.safetensors", te.cfg.d_model);
    ASSERT_EQ(got.lens, ref.lens) << variant;
    const int64_t d = te.cfg.d_model;
    int64_t at = 0;
    double worst = 0;
    for (size_t i = 0; i < got.lens.size(); ++i) {
      double md = 0, mr = 0;
      for (int64_t j = at * d; j < (at + got.lens[i]) * d; ++j) {
        md = std::max(md, static_cast<double>(std::fabs(got.kv_compact.f32()[j] - ref.kv_compact.f32()[j])));
        mr = std::max(mr, static_cast<double>(std::fabs(ref.kv_compact.f32()[j])));
      }
      EXPECT_LE(md, 1e-4 * mr) << variant << ": prompt " << i << " ('" << prompts_[i].substr(0, 40) << "') max |diff| "
                               << md << ", max |ref| " << mr;
      worst = std::max(worst, md / mr);
      at += got.lens[i];
    }
    std::printf("T5 %s on %d rank(s): worst max|diff|/max|ref| over %zu prompts = %.3g\n", variant.c_str(), comm->size(),
                prompts_.size(), worst);
  }
  std::string dir_;
  std::vector<std::string> prompts_;
  std::vector<std::vector<int64_t>> fast_, spm_;
};

TEST_F(T5Golden, TokenIdsEqualTheFastTokenizer) { check_ids(dir_ + "/f32"); }

// Without tokenizer.json the tokenizer builds what transformers converts spiece.model to: the same ids.
TEST_F(T5Golden, TokenIdsWithoutTokenizerJson) {
  const fs::path tmp = fs::temp_directory_path() / fmt::format("skv_t5_nojson_{}", ::getpid());
  fs::create_directories(tmp);
  fs::copy_file(dir_ + "/f32/spiece.model", tmp / "spiece.model", fs::copy_options::overwrite_existing);
  fs::copy_file(dir_ + "/f32/tokenizer_config.json", tmp / "tokenizer_config.json", fs::copy_options::overwrite_existing);
  check_ids(tmp.string());
  fs::remove_all(tmp);
}

// tokenizer.json with pre_tokenizer Sequence[WhitespaceSplit, Metaspace], as older transformers wrote it (the
// published google/flan-t5-* folders): whitespace runs of any kind are one boundary, trailing whitespace no token.
TEST_F(T5Golden, WhitespaceSplitTokenizerJson) {
  const auto ids = read_json(dir_ + "/ids.json");
  const auto ws = ids["ws_fast"].get<std::vector<std::vector<int64_t>>>();
  const auto fuzz = ids["fuzz_prompts"].get<std::vector<std::string>>();
  const auto ws_fuzz = ids["ws_fuzz_fast"].get<std::vector<std::vector<int64_t>>>();
  T5Tokenizer tok(dir_ + "/tokenizer-ws");
  int differ_from_default = 0;
  for (size_t i = 0; i < prompts_.size(); ++i) {
    EXPECT_EQ(tok.encode(prompts_[i], 512), ws[i]) << "prompt " << i;
    differ_from_default += ws[i] != fast_[i];
  }
  EXPECT_GE(differ_from_default, 3);  // trailing spaces, a lone space, trailing newline
  int bad = 0;
  for (size_t i = 0; i < fuzz.size(); ++i)
    if (tok.encode(fuzz[i], 512) != ws_fuzz[i] && ++bad <= 10) ADD_FAILURE() << "fuzz string " << i;
  EXPECT_EQ(bad, 0);
}

// 400 random strings over every kind of whitespace, combining and zero-width marks, unknown and NFKC-changed
// characters, U+2581 and (broken) special tokens.
TEST_F(T5Golden, RandomStringsEqualTheFastTokenizer) {
  const auto ids = read_json(dir_ + "/ids.json");
  const auto prompts = ids["fuzz_prompts"].get<std::vector<std::string>>();
  const auto fast = ids["fuzz_fast"].get<std::vector<std::vector<int64_t>>>();
  ASSERT_EQ(prompts.size(), fast.size());
  ASSERT_GE(prompts.size(), 100u);
  T5Tokenizer tok(dir_ + "/f32");
  int bad = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto got = tok.encode(prompts[i], 512);
    if (got != fast[i] && ++bad <= 10)
      ADD_FAILURE() << "fuzz string " << i << " " << nlohmann::json(prompts[i]).dump() << ": got "
                    << nlohmann::json(got).dump() << ", fast tokenizer " << nlohmann::json(fast[i]).dump();
  }
  EXPECT_EQ(bad, 0) << "of " << prompts.size();
}

TEST_F(T5Golden, EncoderF32) { check_encoder("f32"); }
TEST_F(T5Golden, EncoderShardedCheckpoint) { check_encoder("sharded"); }
TEST_F(T5Golden, EncoderBF16OnDisk) { check_encoder("bf16"); }
TEST_F(T5Golden, EncoderF16OnDisk) { check_encoder("f16"); }

}  // namespace
}  // namespace skv
