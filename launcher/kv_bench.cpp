// kv_bench.cpp - the model side of the KV benchmarks for VAR (see kv_bench.h).
#include "launcher/kv_bench.h"

#include <omp.h>

#include <fstream>
#include <iterator>
#include <thread>

#include "runtime/check.h"

namespace skv {

void add_kv_bench_model_options(CLI::App* cmd, KVBenchModelArgs& a) {
  cmd->add_option("--model", a.files.config, "Model config JSON (default: the demo model)");
  cmd->add_option("--weights", a.files.weights, "Transformer weights (safetensors)");
  cmd->add_option("--vae", a.files.vae, "VAE weights (safetensors)");
  cmd->add_flag("--random-weights", a.random, "Deterministic random weights of the config's shape");
  cmd->add_option("--weight-seed", a.weight_seed, "Seed of --random-weights")->capture_default_str();
  cmd->add_option("--patch-nums", a.patch_nums, "With --random-weights: the schedule, e.g. 1,2,4,6,8,12,16,20,24,32");
  cmd->add_option("--labels", a.labels, "Class labels of one request (e.g. 0-3)")->capture_default_str();
  cmd->add_option("--cfg", a.cfg, "Classifier-free guidance (default: the config's)");
  cmd->add_option("--top-k", a.top_k, "Top-k (default: the config's)");
  cmd->add_option("--top-p", a.top_p, "Top-p (default: the config's)");
  add_context_options(cmd, a.ctx);
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s + ",") {
    if (c == ',') {
      const size_t a = cur.find_first_not_of(' '), b = cur.find_last_not_of(' ');
      if (a != std::string::npos) out.push_back(cur.substr(a, b - a + 1));
      cur.clear();
    } else {
      cur += c;
    }
  }
  return out;
}

std::unique_ptr<KVBenchHolder> make_var_kv_bench_model(const KVBenchModelArgs& a) {
  auto h = std::make_unique<KVBenchHolder>();
  h->ctx = make_context(a.ctx);
  std::vector<int> pn;
  for (const auto& x : split_list(a.patch_nums)) {
    size_t used = 0;
    int v = 0;
    try {
      v = std::stoi(x, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    SKV_CHECK(used == x.size() && v > 0, "--patch-nums '{}': '{}' is not a positive integer", a.patch_nums, x);
    pn.push_back(v);
  }
  h->var = load_var_bundle(a.files, a.random, a.weight_seed, *h->ctx.backend, *h->ctx.tp, pn);
  const VarConfig& cfg = h->var->cfg;
  const std::vector<int64_t> labels = parse_labels(a.labels);
  KVBenchModel& m = h->model;
  m.info = {cfg.depth, cfg.num_heads, cfg.schedule(), cfg.kv_window};
  m.token_bytes = static_cast<int64_t>(2 * labels.size()) * h->var->model->local_heads() * cfg.head_dim() * 2 * 4;
  m.output_rank = h->ctx.is_output_rank();
  m.description = fmt::format("VAR {} (depth {}, {} heads x {}, {} weights), schedule {}, labels {} ({} rows with CFG), "
                              "TP {}", cfg.path, cfg.depth, cfg.num_heads, cfg.head_dim(),
                              a.random ? fmt::format("random seed {}", a.weight_seed) : std::string("trained"),
                              m.info.schedule.describe(), a.labels, 2 * labels.size(), h->ctx.tp->size());
  VarBundle* b = h->var.get();
  const double cfg_scale = a.cfg >= 0 ? a.cfg : cfg.cfg;
  const int top_k = a.top_k >= 0 ? a.top_k : cfg.top_k;
  const float top_p = a.top_p >= 0 ? a.top_p : cfg.top_p;
  m.run = [b, labels, cfg_scale, top_k, top_p](KVPolicy& policy, uint64_t seed, bool decode) {
    VarRequest req;
    req.labels = labels;
    req.cfg = cfg_scale;
    req.sampling.top_k = top_k;
    req.sampling.top_p = top_p;
    req.seed = seed;
    VarRunOptions opt;
    opt.policy = &policy;
    opt.decode = decode;
    return var_generate(*b->model, *b->vae, req, opt);
  };
  return h;
}

std::string current_command_line() {
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>()), out;
  for (char c : all) out += c == '\0' ? ' ' : c;
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

std::string bench_machine_line() {
  std::string cpu = "unknown CPU";
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
#ifdef NDEBUG
  const char* build = "optimised (NDEBUG)";
#else
  const char* build = "debug";
#endif
  return fmt::format("{}, {} hardware threads, {} OpenMP threads, {} build", cpu, std::thread::hardware_concurrency(),
                     omp_get_max_threads(), build);
}

}  // namespace skv
