// cmd_inspect.cpp - `scalekv inspect FILE.safetensors`: tensors, dtypes, shapes, parameter count.
#include <fmt/core.h>

#include <map>

#include "launcher/commands.h"
#include "runtime/safetensors.h"

namespace skv {

void register_inspect(CLI::App& app) {
  auto* cmd = app.add_subcommand("inspect", "List the tensors of a safetensors file and count parameters");
  auto path = std::make_shared<std::string>();
  auto quiet = std::make_shared<bool>(false);
  cmd->add_option("file", *path, "safetensors file")->required();
  cmd->add_flag("--summary", *quiet, "Only print the totals");
  cmd->callback([path, quiet] {
    SafeTensors st(*path);
    std::vector<const TensorEntry*> order;
    for (const auto& e : st.entries()) order.push_back(&e);
    std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->name < b->name; });
    std::map<std::string, int64_t> by_dtype;
    size_t w = 4;
    for (auto* e : order) w = std::max(w, e->name.size());
    if (!*quiet) fmt::print("{:<{}}  {:<5}  {}\n", "name", w, "dtype", "shape");
    for (auto* e : order) {
      if (!*quiet) fmt::print("{:<{}}  {:<5}  {}\n", e->name, w, dtype_name(e->dtype), shape_str(e->shape));
      by_dtype[std::string(dtype_name(e->dtype))] += shape_numel(e->shape);
    }
    fmt::print("{}: {} tensors, {} parameters ({:.2f} M), {} bytes\n", *path, order.size(), st.num_params(),
               st.num_params() / 1e6, st.file_size());
    for (const auto& [dt, n] : by_dtype) fmt::print("  {}: {} elements\n", dt, n);
    for (const auto& [k, v] : st.metadata()) fmt::print("  metadata {} = {}\n", k, v);
  });
}

}  // namespace skv
