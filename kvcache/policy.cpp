#include "kvcache/policy.h"

#include <algorithm>

#include "runtime/check.h"

namespace skv {

namespace {

class FullPolicy final : public KVPolicy {
 public:
  std::string name() const override { return "full"; }
  int64_t budget(int, int, int64_t total) const override { return total; }
  void select(const CompressionInput&, int64_t, std::vector<int32_t>&) override {
    SKV_FAIL("internal: the full policy never selects");
  }
};

}  // namespace

std::unique_ptr<KVPolicy> make_full_policy() { return std::make_unique<FullPolicy>(); }

std::vector<int64_t> plan_store_capacity(const KVPolicy& policy, const Schedule& schedule, int depth) {
  std::vector<int64_t> cap(depth, 0);
  for (int l = 0; l < depth; ++l) {
    int64_t len = 0;
    for (int s = 0; s + 1 < schedule.num_scales(); ++s) {
      const int64_t total = len + schedule.tokens(s);
      len = std::min(total, policy.budget(l, s, total));
      cap[l] = std::max(cap[l], len);
    }
  }
  return cap;
}

}  // namespace skv
