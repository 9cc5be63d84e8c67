#include "launcher/kv_options.h"

#include "runtime/check.h"

namespace skv {

void add_kv_options(CLI::App* cmd, KVOptions& o) {
  cmd->add_option("--kv-policy", o.policy, "KV-cache policy: full")->capture_default_str();
}

std::unique_ptr<KVPolicy> make_kv_policy(const KVOptions& o, const KVModelInfo&) {
  if (o.policy == "full") return make_full_policy();
  SKV_FAIL("unknown --kv-policy '{}' (available: full)", o.policy);
}

}  // namespace skv
