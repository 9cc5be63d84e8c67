// Infinity configs and schedules: the shipped 2B/8B configs load with the official derived shapes,
// bad fields are named, every official aspect ratio x resolution builds a schedule and a RoPE table,
// unknown ones list the valid values, and the RoPE table equals an independent re-derivation of
// precompute_rope2d_freqs_grid (rope2d_normalized_by_hw = 2: positions on the 1M grid).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "runtime/check.h"
#include "runtime/models/infinity_config.h"

namespace skv {

namespace {

std::string repo_file(const std::string& rel) {
  return (std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / rel).string();
}

std::string load_error(const std::string& body) {
  const std::string p = (std::filesystem::temp_directory_path() / ("skv_inf_cfg_" + std::to_string(::getpid()) + ".json")).string();
  std::ofstream(p) << body;
  std::string msg;
  try {
    InfinityConfig::load(p);
  } catch (const Error& e) {
    msg = e.what();
  }
  std::filesystem::remove(p);
  return msg;
}

}  // namespace

TEST(InfinityConfig, ShippedConfigsHaveTheOfficialShapes) {
  const InfinityConfig c2 = InfinityConfig::load(repo_file("configs/infinity-2b.json"));
  EXPECT_EQ(c2.depth, 32);
  EXPECT_EQ(c2.head_dim(), 128);
  EXPECT_EQ(c2.ffn_hidden(), 8192);
  EXPECT_EQ(c2.d_vae(), 32);
  EXPECT_EQ(c2.V(), 64);
  EXPECT_EQ(c2.pool_heads(), 16);
  EXPECT_EQ(c2.pool_head_dim(), 128);
  EXPECT_EQ(c2.blocks_per_chunk(), 4);
  EXPECT_EQ(c2.block_prefix(9), "block_chunks.2.module.1.");
  EXPECT_EQ(c2.vae.patch_size, 16);
  EXPECT_FALSE(c2.spatial_patchify);

  const InfinityConfig c8 = InfinityConfig::load(repo_file("configs/infinity-8b.json"));
  EXPECT_EQ(c8.depth, 40);
  EXPECT_EQ(c8.head_dim(), 128);
  EXPECT_EQ(c8.ffn_hidden(), 14336);
  EXPECT_TRUE(c8.spatial_patchify);
  EXPECT_EQ(c8.vae.codebook_dim, 14);
  EXPECT_EQ(c8.d_vae(), 56);  // 2x2 patchify: 4 x 14 bits per transformer token
  EXPECT_EQ(c8.V(), 112);
  EXPECT_EQ(c8.pool_heads(), 16);
  EXPECT_EQ(c8.pool_head_dim(), 224);
  EXPECT_EQ(c8.vae.patch_size, 8);
  EXPECT_EQ(c8.vae.decoder_ch_mult, std::vector<int>({1, 2, 4, 4}));
  EXPECT_EQ(c8.block_prefix(7), "block_chunks.1.module.2.");
  // 1024x1024: 64x64 transformer tokens, 128x128 VAE tokens, patch 8
  const Schedule s = infinity_schedule_for(1.0, 1024);
  EXPECT_EQ(s[s.num_scales() - 1].h * c8.patch_factor() * c8.vae.patch_size, 1024);
}

TEST(InfinityConfig, BadFieldsAreNamed) {
  const std::string k = R"("depth":4,"embed_dim":256,"num_heads":2,"text_channels":512,"block_chunks":2)";
  // The kwargs with one field replaced (a key may appear only once).
  auto with = [&](const std::string& key, const std::string& value) {
    std::string body = k;
    const size_t a = body.find("\"" + key + "\":");
    if (a == std::string::npos) return R"({"infinity_kwargs":{)" + k + ",\"" + key + "\":" + value + "}}";
    const size_t v = a + key.size() + 3, e = body.find(',', v);
    body.replace(v, (e == std::string::npos ? body.size() : e) - v, value);
    return R"({"infinity_kwargs":{)" + body + "}}";
  };
  EXPECT_EQ(load_error(R"({"infinity_kwargs":{)" + k + "}}"), "");
  EXPECT_NE(load_error(R"({"depth":4})").find("'infinity_kwargs'"), std::string::npos);
  EXPECT_NE(load_error(with("block_chunks", "3")).find("field 'block_chunks'"), std::string::npos);
  EXPECT_NE(load_error(with("swiglu", "true")).find("field 'swiglu'"), std::string::npos);
  EXPECT_NE(load_error(with("text_channels", "500")).find("field 'text_channels'"), std::string::npos);
  // Hostile input, class 3: integers beyond 32 bits are errors, not truncated (2^32 + 256 once ran as 256).
  EXPECT_NE(load_error(with("embed_dim", "4294967552")).find("field 'embed_dim' is 4294967552, outside [1, 65536]"),
            std::string::npos) << load_error(with("embed_dim", "4294967552"));
  EXPECT_NE(load_error(with("depth", "18446744073709551615")).find("field 'depth' is 18446744073709551615, which is "
                                                                    "not a 64-bit integer"),
            std::string::npos);
  EXPECT_NE(load_error(with("depth", "4.5")).find("field 'depth' is 4.5"), std::string::npos);
  // Duplicates and misspelt optional keys (class 5) are errors; unknown keys elsewhere warn.
  EXPECT_NE(load_error(R"({"infinity_kwargs":{)" + k + R"(,"depth":6}})").find("key 'depth' appears twice in "
                                                                                 "'infinity_kwargs'"),
            std::string::npos);
  EXPECT_NE(load_error(with("rope2d_normalised_by_hw", "2")).find("unknown field 'rope2d_normalised_by_hw': did you "
                                                                  "mean 'rope2d_normalized_by_hw'?"),
            std::string::npos);
  EXPECT_NE(load_error(R"({"infinity_kwargs":{)" + k + R"(},"sampling":{"top_kk":5}})").find("did you mean 'top_k'"),
            std::string::npos);
  EXPECT_NE(load_error(R"({"infinity_kwargs":{)" + k + R"(,"fused_norm":false}})").find("scale_ind"), std::string::npos);
  EXPECT_NE(load_error(R"({"infinity_kwargs":{)" + k + R"(},"vae":{"patch_size":32,"decoder_ch_mult":[1,2,4,4,4]}})")
                .find("field 'patch_size'"),
            std::string::npos);
  EXPECT_NE(load_error(R"({"infinity_kwargs":{)" + k + R"(},"vae":{"z_interplote_up":"lanczos"}})").find("z_interplote_up"),
            std::string::npos);
}

TEST(InfinitySchedule, EveryOfficialRatioAndResolutionBuildsAScheduleAndRope) {
  const auto ratios = infinity_aspect_ratios();
  EXPECT_EQ(ratios.size(), 15u);
  for (double r : ratios)
    for (int res : {256, 512, 768, 1024}) {
      SCOPED_TRACE(fmt::format("h/w {} at {}", r, res));
      const Schedule s = infinity_schedule_for(r, res);
      EXPECT_EQ(s.num_scales(), res == 256 ? 7 : res == 512 ? 10 : res == 768 ? 12 : 13);
      EXPECT_EQ(s[0].h * s[0].w, 1);
      for (int i = 1; i < s.num_scales(); ++i) EXPECT_GE(s.tokens(i), s.tokens(i - 1));
      const auto& last = s[s.num_scales() - 1];
      EXPECT_NEAR(static_cast<double>(last.h) / last.w, r, 0.01 * r + 0.01);  // the table's own check
      // the pixel budget grows with the resolution (the table's "0.60M" is 0.59-0.70 M, so no exact check)
      const double pixels = 256.0 * last.h * last.w, want = static_cast<double>(res) * res;
      EXPECT_GT(pixels / want, 0.85);
      EXPECT_LE(pixels / want, 1.25);
      const auto grid = infinity_rope_grid(s);
      EXPECT_LE(grid.first, 128);
      EXPECT_LE(grid.second, 128);
      const Tensor t = infinity_rope_table(s, 128, 2);
      EXPECT_EQ(t.shape(), Shape({2, s.total(), 64}));
      for (int64_t i = 0; i < t.numel(); ++i) ASSERT_TRUE(std::isfinite(t.f32()[i]));
    }
  try {
    infinity_schedule_for(1.1, 1024);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("1.333"), std::string::npos) << e.what();
  }
  try {
    infinity_schedule_for(1.0, 640);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("1024"), std::string::npos) << e.what();
  }
  try {
    infinity_rope_grid(Schedule::square({1, 2, 3}));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("dynamic-resolution"), std::string::npos) << e.what();
  }
}

// precompute_rope2d_freqs_grid, re-derived: token (y, x) of an h x w scale uses height index
// round(y * H / h) and width index round(x * W / w) of the ratio's 1M grid H x W; pair i < hd/4 rotates
// by iy / 10000^(4i / hd), pair hd/4 + i by ix / 10000^(4i / hd).
TEST(InfinitySchedule, RopeTableMatchesTheOfficialFormula) {
  for (double r : {1.0, 0.5, 1.333})
    for (int res : {512, 1024}) {
      const Schedule s = infinity_schedule_for(r, res);
      const Schedule full = infinity_schedule_for(r, 1024);
      const int H = full[full.num_scales() - 1].h, W = full[full.num_scales() - 1].w;
      const int hd = 64, half = hd / 2, nf = half / 2;
      const Tensor t = infinity_rope_table(s, hd, 2);
      double worst = 0;
      for (int si = 0; si < s.num_scales(); ++si)
        for (int y = 0; y < s[si].h; ++y)
          for (int x = 0; x < s[si].w; ++x) {
            const double iy = std::nearbyint(y * (static_cast<double>(H) / s[si].h));
            const double ix = std::nearbyint(x * (static_cast<double>(W) / s[si].w));
            const int64_t p = s.offset(si) + static_cast<int64_t>(y) * s[si].w + x;
            for (int i = 0; i < half; ++i) {
              const double f = 1.0 / std::pow(10000.0, 2.0 * (i % nf) / half);
              const double ang = (i < nf ? iy : ix) * f;
              worst = std::max(worst, std::fabs(t.f32()[p * half + i] - std::cos(ang)));
              worst = std::max(worst, std::fabs(t.f32()[(s.total() + p) * half + i] - std::sin(ang)));
            }
          }
      EXPECT_LT(worst, 2e-5) << "h/w " << r << " at " << res;
    }
  // The 512 schedule's positions are those of the 1024 one (same prefix, same 1M grid).
  const Tensor a = infinity_rope_table(infinity_schedule_for(1.0, 512), 128, 2);
  const Tensor b = infinity_rope_table(infinity_schedule_for(1.0, 1024), 128, 2);
  const int64_t La = a.dim(1), Lb = b.dim(1);
  for (int c = 0; c < 2; ++c)
    for (int64_t i = 0; i < La * 64; ++i) ASSERT_EQ(a.f32()[c * La * 64 + i], b.f32()[c * Lb * 64 + i]);
  // Normalisation: scale 32x32 of the 512 schedule uses even positions of the 64x64 grid.
  const Schedule s512 = infinity_schedule_for(1.0, 512);
  const int64_t p = s512.offset(9) + 1 * 32 + 1;  // (y, x) = (1, 1) -> grid (2, 2)
  EXPECT_FLOAT_EQ(a.f32()[p * 64 + 0], static_cast<float>(std::cos(2.0)));
  EXPECT_FLOAT_EQ(a.f32()[p * 64 + 32], static_cast<float>(std::cos(2.0)));
}

}  // namespace skv
