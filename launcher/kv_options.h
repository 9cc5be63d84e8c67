// kv_options.h - the KV-cache policy options shared by generate, bench, plan and serve.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "kvcache/policy.h"

namespace skv {

struct KVOptions {
  std::string policy = "full";
};
void add_kv_options(CLI::App* cmd, KVOptions& o);

// What a policy needs to know about the model it serves.
struct KVModelInfo {
  int depth = 0;
  int num_heads = 0;
  Schedule schedule;
};

std::unique_ptr<KVPolicy> make_kv_policy(const KVOptions& o, const KVModelInfo& m);

}  // namespace skv
