#include "runtime/models/infinity_text.h"

#include <cstring>
#include <nlohmann/json.hpp>

#include "runtime/check.h"
#include "runtime/models/bsq_vae.h"

namespace skv {

InfinityText load_infinity_text(const std::string& path, int text_channels, std::vector<std::string>* prompts) {
  SafeTensors st(path);
  SKV_CHECK(st.contains("kv_compact") && st.contains("lens"), "{}: a text-embeddings file needs the tensors "
            "'kv_compact' [tokens, {}] and 'lens' [prompts] (scripts/encode_prompts.py writes it)", path, text_channels);
  InfinityText t;
  const auto& ke = st.entry("kv_compact");
  SKV_CHECK(ke.shape.size() == 2 && ke.shape[1] == text_channels, "{}: 'kv_compact' has shape {}, expected [tokens, {}] "
            "(the model's text_channels)", path, shape_str(ke.shape), text_channels);
  st.expect_float("kv_compact");
  t.kv_compact = st.load("kv_compact", MemCategory::Activations);
  check_finite(t.kv_compact, fmt::format("{}: tensor 'kv_compact' (the prompt embeddings)", st.path()));
  const Tensor lens = st.load_raw("lens", MemCategory::Workspace);
  SKV_CHECK(lens.ndim() == 1 && (lens.dtype() == DType::I64 || lens.dtype() == DType::I32),
            "{}: 'lens' must be a 1-D I64 or I32 tensor, got {}", path, lens.describe());
  SKV_CHECK(lens.numel() <= (int64_t{1} << 20), "{}: 'lens' lists {} prompts; one run takes at most {}", path,
            lens.numel(), int64_t{1} << 20);
  int64_t sum = 0;
  for (int64_t i = 0; i < lens.numel(); ++i) {
    const int64_t v = lens.dtype() == DType::I64 ? lens.data<int64_t>()[i] : lens.data<int32_t>()[i];
    SKV_CHECK(v >= 1 && v <= ke.shape[0], "{}: prompt {} has {} tokens ('lens' entries must be in [1, {}], the rows "
              "of 'kv_compact')", path, i, v, ke.shape[0]);
    t.lens.push_back(v);
    sum += v;
  }
  SKV_CHECK(!t.lens.empty(), "{}: 'lens' is empty (no prompts)", path);
  SKV_CHECK(sum == ke.shape[0], "{}: 'lens' sums to {} tokens but 'kv_compact' has {} rows", path, sum, ke.shape[0]);
  if (prompts) {
    prompts->assign(t.lens.size(), "");
    const auto it = st.metadata().find("prompts");
    if (it != st.metadata().end()) {
      try {
        const auto j = nlohmann::json::parse(it->second);
        if (j.is_array() && j.size() == t.lens.size())
          for (size_t i = 0; i < j.size(); ++i) (*prompts)[i] = j[i].is_string() ? j[i].get<std::string>() : "";
      } catch (const nlohmann::json::exception&) {
      }
    }
  }
  return t;
}

void save_infinity_text(const std::string& path, const InfinityText& text, const std::vector<std::string>& prompts) {
  Tensor lens = Tensor::empty({static_cast<int64_t>(text.lens.size())}, DType::I64);
  for (size_t i = 0; i < text.lens.size(); ++i) lens.data<int64_t>()[i] = text.lens[i];
  std::map<std::string, std::string> meta{{"format", "scalekv-text-embeddings"}};
  if (!prompts.empty()) meta["prompts"] = nlohmann::json(prompts).dump();
  write_safetensors(path, {{"kv_compact", text.kv_compact}, {"lens", lens}}, meta);
}

InfinityText slice_infinity_text(const InfinityText& text, int64_t b0, int64_t b1) {
  SKV_CHECK(0 <= b0 && b0 < b1 && b1 <= static_cast<int64_t>(text.lens.size()), "slice_infinity_text: [{}, {}) of {}",
            b0, b1, text.lens.size());
  int64_t r0 = 0, r1 = 0;
  for (int64_t i = 0; i < b1; ++i) (i < b0 ? r0 : r1) += text.lens[i];
  r1 += r0;
  InfinityText out;
  out.kv_compact = text.kv_compact.slice0(r0, r1);
  out.lens.assign(text.lens.begin() + b0, text.lens.begin() + b1);
  return out;
}

void write_random_infinity_checkpoint(const InfinityConfig& cfg, const std::string& model_path,
                                      const std::string& vae_path, uint64_t seed) {
  auto comm = make_local_communicator();
  std::vector<std::pair<std::string, Tensor>> rec;
  {
    WeightLoader wl(seed, cpu_backend());
    wl.record = &rec;
    InfinityModel m(cfg, wl, *comm);
  }
  write_safetensors(model_path, rec, {{"format", "pt"}, {"source", "scalekv random checkpoint"}});
  rec.clear();
  {
    WeightLoader wl(seed + 1, cpu_backend());
    wl.record = &rec;
    BsqVae v(cfg, wl);
  }
  write_safetensors(vae_path, rec, {{"format", "pt"}, {"source", "scalekv random checkpoint"}});
}

}  // namespace skv
