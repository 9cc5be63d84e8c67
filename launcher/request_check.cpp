// request_check.cpp - the cross-rank request comparison (see request_check.h).
#include "launcher/request_check.h"

#include <fmt/format.h>

#include <cstring>

#include "launcher/context.h"
#include "runtime/check.h"

namespace skv {

namespace {

int64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return static_cast<int64_t>(h);
}

}  // namespace

void check_same_request(const RunContext& ctx, const std::vector<std::pair<std::string, std::string>>& fields) {
  if (!ctx.world || ctx.world->size() <= 1) return;
  Communicator& w = *ctx.world;
  const int n = w.size();
  const size_t f = fields.size();
  std::vector<int64_t> mine(f), all(f * static_cast<size_t>(n));
  for (size_t i = 0; i < f; ++i) mine[i] = fnv1a(fields[i].second);
  w.all_gather(mine.data(), all.data(), f, DType::I64);
  for (size_t i = 0; i < f; ++i) {
    bool same = true;
    for (int r = 1; r < n; ++r) same = same && all[static_cast<size_t>(r) * f + i] == all[i];
    if (same) continue;
    // Every rank reaches this point (the hashes are the same everywhere): gather the values to name them.
    constexpr size_t kLen = 80;
    char buf[kLen] = {};
    std::strncpy(buf, fields[i].second.c_str(), kLen - 1);
    std::vector<char> vals(kLen * static_cast<size_t>(n));
    w.all_gather(buf, vals.data(), kLen, DType::U8);
    std::string which;
    for (int r = 0; r < n && r < 8; ++r)
      which += fmt::format("{}rank {}: '{}'", r ? ", " : "", r, std::string(vals.data() + static_cast<size_t>(r) * kLen));
    if (n > 8) which += ", ...";
    SKV_FAIL("the ranks of this job were given different {} ({}): every rank must get the same options", fields[i].first,
             which);
  }
}

}  // namespace skv
