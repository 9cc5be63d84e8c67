// generate_output.cpp - seed parsing, the one-pass memory bound and the counting PNG writer (see
// generate_output.h).
#include "launcher/generate_output.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>

#include "kvcache/page_pool.h"
#include "kvcache/planner.h"
#include "runtime/check.h"
#include "runtime/file_io.h"
#include "runtime/image_io.h"

namespace skv {

uint64_t parse_seed(const std::string& text, const std::string& option) {
  bool ok = !text.empty() && text.size() <= 20;
  unsigned __int128 v = 0;
  for (char c : text) {
    ok = ok && std::isdigit(static_cast<unsigned char>(c));
    if (ok) v = v * 10 + static_cast<unsigned>(c - '0');
  }
  ok = ok && v <= static_cast<unsigned __int128>(UINT64_MAX);
  SKV_CHECK(ok, "{} '{}' must be a non-negative integer (0 to 18446744073709551615)", option, text);
  return static_cast<uint64_t>(v);
}

void check_batch_fits(const KVPolicy& policy, const Schedule& sched, int depth, int64_t images, int local_heads,
                      int head_dim, bool batch_given) {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0 || images <= 0) return;
  const double mem = static_cast<double>(pages) * static_cast<double>(page);
  // Tokens of the planned peak (pool + transient) for one row of one head, then scaled in doubles so that
  // a huge request cannot wrap: 2 rows (CFG) per image, K and V, F32.
  const double per_image = static_cast<double>(plan_kv(policy, sched, depth, 1, kKVPageSlots).peak_bytes()) * 2.0 *
                           local_heads * head_dim * 2.0 * 4.0;
  const double need = per_image * static_cast<double>(images);
  if (need <= mem) return;
  const int64_t fits = std::max<int64_t>(1, static_cast<int64_t>(mem / 2 / std::max(1.0, per_image)));
  SKV_FAIL("{} images in one forward pass need {:.1f} GiB of KV cache alone and this machine has {:.1f} GiB: {} "
           "--batch {} or less", images, need / (1u << 30), mem / (1u << 30), batch_given ? "use" : "pass", fits);
}

void ImageOutput::write_png(const std::string& name, const uint8_t* rgb, int w, int h) {
  try {
    write_png_rgb(dir_ + "/" + name, rgb, w, h);
  } catch (const Error& e) {
    SKV_FAIL("{}; {} of {} images were written to {}/ before it", e.message(), written_, expected_, dir_);
  }
  ++written_;
}

void ImageOutput::write_text(const std::string& name, const std::string& text) {
  try {
    write_file_atomic(dir_ + "/" + name, text);
  } catch (const Error& e) {
    SKV_FAIL("{}; the {} images before it were written to {}/", e.message(), written_, dir_);
  }
}

void ImageOutput::write_tokens(int replica) {
  write_text(replica == 0 ? "tokens.json" : fmt::format("tokens.r{}.json", replica), tokens_.dump() + "\n");
}

}  // namespace skv
