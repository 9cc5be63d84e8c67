// run_infinity_bench on a tiny config: prints the markdown tables (one row per scale, the total, the
// memory categories), honours the depth override and reports what it ran.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "launcher/bench_infinity.h"

namespace skv {

TEST(BenchInfinity, PrintsPerScaleAndMemoryTables) {
  const std::string p = (std::filesystem::temp_directory_path() / ("skv_bench_inf_" + std::to_string(::getpid()) + ".json")).string();
  std::ofstream(p) << R"({"family":"infinity","name":"tiny","infinity_kwargs":{"depth":4,"embed_dim":64,"num_heads":2,
    "text_channels":128,"text_maxlen":16,"block_chunks":2},
    "vae":{"codebook_dim":8,"patch_size":4,"base_ch":32,"num_res_blocks":1,"decoder_ch_mult":[1,1,2]},
    "sampling":{"cfg":3,"tau":0.5,"top_k":900,"top_p":0.97}})";
  InfinityBenchOptions o;
  o.config = p;
  o.resolution = 256;
  o.batch = 2;
  o.depth = 1;
  o.repeats = 1;
  o.warmup = false;
  o.text_len = 5;
  o.decode = true;
  o.command = "scalekv bench --model tiny";
  testing::internal::CaptureStdout();
  const double total = run_infinity_bench(o);
  const std::string out = testing::internal::GetCapturedStdout();
  std::filesystem::remove(p);
  EXPECT_GT(total, 0.0);
  EXPECT_NE(out.find("depth 1 of 4"), std::string::npos) << out;
  EXPECT_NE(out.find("batch 2 (+CFG: 4 rows)"), std::string::npos) << out;
  EXPECT_NE(out.find("| 6 | 16x16 |"), std::string::npos) << out;
  EXPECT_NE(out.find("| **total** | 521 |"), std::string::npos) << out;
  EXPECT_NE(out.find("| decoder | 64x64 px |"), std::string::npos) << out;
  EXPECT_NE(out.find("kv (measured peak)"), std::string::npos) << out;
  EXPECT_NE(out.find("command: `scalekv bench --model tiny`"), std::string::npos) << out;
}

}  // namespace skv
