// generate_output.h - what both generate paths (VAR, Infinity) share around the model: the options
// checked before anything is loaded, the memory bound of one forward pass, and the PNG writer that
// counts what it wrote. Every image is written atomically (runtime/file_io.h); a failed write ends the
// run with "<file>: write failed (<OS error>); N of M images were written to DIR/".
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "kvcache/policy.h"
#include "kvcache/schedule.h"

namespace skv {

// A seed option: a decimal integer in [0, 2^64); "-1", "1.5", "x" are one-line errors naming `option`.
uint64_t parse_seed(const std::string& text, const std::string& option);

// Throws, before anything is allocated, when the KV cache of `images` images in one forward pass
// (planned with `policy`, F32 K and V, CFG rows) cannot fit this machine's memory; says which --batch fits.
void check_batch_fits(const KVPolicy& policy, const Schedule& sched, int depth, int64_t images, int local_heads,
                      int head_dim, bool batch_given);

class ImageOutput {
 public:
  ImageOutput(std::string dir, int64_t expected) : dir_(std::move(dir)), expected_(expected) {}
  // Writes DIR/name atomically; on failure throws naming the file, the OS error and what was written.
  void write_png(const std::string& name, const uint8_t* rgb, int w, int h);
  // Writes DIR/name (e.g. labels.json) the same way.
  void write_text(const std::string& name, const std::string& text);
  // --save-tokens: keeps `tokens` (one image's sampled tokens per scale) under the image's file name, and
  // write_tokens() writes them all as DIR/tokens.json (tokens.rR.json for data-parallel replica R > 0).
  void add_tokens(const std::string& image, nlohmann::json tokens) { tokens_[image] = std::move(tokens); }
  void write_tokens(int replica);
  int64_t written() const { return written_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  int64_t expected_ = 0, written_ = 0;
  nlohmann::json tokens_ = nlohmann::json::object();
};

}  // namespace skv
