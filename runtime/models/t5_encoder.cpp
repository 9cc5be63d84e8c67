#include "runtime/models/t5_encoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>

#include "parallel/communicator.h"
#include "runtime/check.h"
#include "runtime/file_io.h"
#include "runtime/json_util.h"
#include "runtime/safetensors.h"
#include "runtime/models/block_ops.h"
#include "runtime/models/var_model.h"  // valid_tp_sizes

namespace skv {

namespace fs = std::filesystem;

T5Config T5Config::load(const std::string& dir) {
  T5Config c;
  c.path = (fs::path(dir) / "config.json").string();
  SKV_CHECK(fs::is_directory(dir), "--t5 {}: not a folder (a Hugging Face T5 checkpoint folder: config.json, "
            "model.safetensors or its shards, spiece.model)", dir);
  const nlohmann::json j = read_json_file(c.path);
  SKV_CHECK(j.is_object(), "{}: not a JSON object", c.path);
  JsonFields f(j, c.path);
  const std::string type = f.string("model_type", "");
  SKV_CHECK(type == "t5", "{}: model_type is '{}', not 't5' (a T5 / Flan-T5 encoder checkpoint is needed)", c.path, type);
  c.d_model = f.int_in("d_model", 1, 1 << 16);
  c.d_kv = f.int_in("d_kv", 1, 1 << 12);
  c.num_heads = f.int_in("num_heads", 1, 1 << 12);
  c.d_ff = f.int_in("d_ff", 1, 1 << 18);
  c.num_layers = f.int_in("num_layers", 1, 1024);
  c.vocab_size = f.int_in("vocab_size", 1, 1 << 22);
  c.num_buckets = f.int_in("relative_attention_num_buckets", 32, 2, 1 << 16);
  c.max_distance = f.int_in("relative_attention_max_distance", 128, 2, 1 << 20);
  c.eps = static_cast<float>(f.number("layer_norm_epsilon", 1e-6));
  f.require(c.eps > 0, "layer_norm_epsilon", "must be positive");
  const std::string ff = f.string("feed_forward_proj", "relu");
  // transformers' T5Config: "gated-gelu" means gelu_new (tanh); "relu"/"gated-relu" ReLU.
  if (ff == "gated-gelu") {
    c.gated = true;
  } else if (ff == "relu" || ff == "gated-relu") {
    c.gated = ff == "gated-relu";
    c.relu = true;
  } else {
    SKV_CHECK(false, "{}: feed_forward_proj '{}' is not supported (gated-gelu, relu or gated-relu)", c.path, ff);
  }
  return c;
}

struct T5Checkpoint::File {
  explicit File(const std::string& p) : st(p) {}
  SafeTensors st;
  std::unique_ptr<WeightLoader> wl;
  Backend* be = nullptr;
};

T5Checkpoint::T5Checkpoint(const std::string& dir) : dir_(dir) {
  const std::string single = (fs::path(dir) / "model.safetensors").string();
  const std::string index = (fs::path(dir) / "model.safetensors.index.json").string();
  std::vector<std::string> files;
  std::map<std::string, std::string> named;  // tensor -> shard file, from the index
  if (fs::exists(index)) {
    const nlohmann::json j = read_json_file(index);
    SKV_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
              "{}: no 'weight_map' object (a sharded checkpoint's index maps each tensor to its shard)", index);
    std::set<std::string> seen;
    for (const auto& [name, file] : j["weight_map"].items()) {
      SKV_CHECK(file.is_string(), "{}: weight_map['{}'] is not a file name", index, name);
      const std::string fname = file.get<std::string>();
      SKV_CHECK(!fname.empty() && fname.find('/') == std::string::npos && fname != "." && fname != "..",
                "{}: weight_map['{}'] = '{}' is not a file name in the folder", index, name, fname);
      const std::string p = (fs::path(dir) / fname).string();
      SKV_CHECK(fs::exists(p), "{}: names shard '{}' (for tensor '{}'), which is missing from {}", index, fname, name, dir);
      if (seen.insert(p).second) files.push_back(p);
      named[name] = p;
    }
    what_ = index;
  } else {
    SKV_CHECK(fs::exists(single), "{}: neither model.safetensors nor model.safetensors.index.json (pytorch_model.bin "
              "is not read: convert it to safetensors)", dir);
    files.push_back(single);
    what_ = single;
  }
  for (size_t i = 0; i < files.size(); ++i) {
    files_.push_back(std::make_unique<File>(files[i]));
    file_bytes_ += static_cast<int64_t>(files_.back()->st.file_size());
    for (const auto& e : files_.back()->st.entries()) where_.emplace(e.name, i);
  }
  for (const auto& [name, p] : named) {
    const auto it = where_.find(name);
    SKV_CHECK(it != where_.end() && files_[it->second]->st.path() == p, "{}: tensor '{}' is mapped to {} but is not in it",
              index, name, p);
  }
}

T5Checkpoint::~T5Checkpoint() = default;

bool T5Checkpoint::has(const std::string& name) const { return where_.count(name) != 0; }

const WeightLoader& T5Checkpoint::loader(const std::string& name, Backend& be) const {
  const auto it = where_.find(name);
  SKV_CHECK(it != where_.end(), "{}: tensor '{}' is missing (the T5 encoder needs it; is this a T5 checkpoint?)", what_,
            name);
  File& f = *files_[it->second];
  if (!f.wl || f.be != &be) {
    f.wl = std::make_unique<WeightLoader>(f.st, be, "the T5 config " + (fs::path(dir_) / "config.json").string());
    f.be = &be;
  }
  return *f.wl;
}

int t5_relative_bucket(int64_t relative_position, int num_buckets, int max_distance) {
  // transformers T5Attention._relative_position_bucket, bidirectional, in its float32 arithmetic.
  int nb = num_buckets / 2;
  int bucket = relative_position > 0 ? nb : 0;
  const int64_t rp = relative_position < 0 ? -relative_position : relative_position;
  const int max_exact = nb / 2;
  if (rp < max_exact) return bucket + static_cast<int>(rp);
  const float ratio = static_cast<float>(rp) / static_cast<float>(max_exact);
  const float denom = static_cast<float>(std::log(static_cast<double>(max_distance) / max_exact));
  float v = std::log(ratio) / denom;
  v = v * static_cast<float>(nb - max_exact);
  int64_t large = max_exact + static_cast<int64_t>(v);
  large = std::min<int64_t>(large, nb - 1);
  return bucket + static_cast<int>(large);
}

T5Encoder::T5Encoder(const T5Config& cfg, const T5Checkpoint& ck, Backend& be, Communicator& comm)
    : cfg_(cfg), be_(be), comm_(comm) {
  const int tp = comm.size(), rank = comm.rank();
  SKV_CHECK(cfg.num_heads % tp == 0 && cfg.d_ff % tp == 0, "tensor parallel size {} does not divide the T5 encoder's "
            "num_heads {} and d_ff {} ({}); valid sizes: {}", tp, cfg.num_heads, cfg.d_ff, cfg.path,
            valid_tp_sizes(cfg.num_heads, cfg.d_ff));
  local_heads_ = cfg.num_heads / tp;
  head0_ = rank * local_heads_;
  local_ff_ = cfg.d_ff / tp;
  const int64_t d = cfg.d_model, inner = cfg.inner(), dk = cfg.d_kv;
  const int64_t c0 = head0_ * dk, cl = local_heads_ * dk, f0 = rank * local_ff_;
  auto get = [&](const std::string& n, const Shape& s, WeightUse u = WeightUse::Any) { return ck.loader(n, be).get(n, s, u); };
  auto rows = [&](const std::string& n, const Shape& s, int64_t a, int64_t b) {
    return ck.loader(n, be).rows(n, s, {{a, b}}, WeightUse::Matmul);
  };
  auto cols = [&](const std::string& n, const Shape& s, int64_t a, int64_t b) {
    return ck.loader(n, be).cols(n, s, a, b, WeightUse::Matmul);
  };
  // transformers ties encoder.embed_tokens to shared; a saved file holds one of the two names.
  const std::string emb = ck.has("encoder.embed_tokens.weight") ? "encoder.embed_tokens.weight" : "shared.weight";
  embed_ = get(emb, {cfg.vocab_size, d});
  final_ln_ = get("encoder.final_layer_norm.weight", {d});
  const std::string rb = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight";
  rel_bias_ = ck.loader(rb, be).host(rb, {cfg.num_buckets, cfg.num_heads});
  layers_.resize(cfg.num_layers);
  for (int i = 0; i < cfg.num_layers; ++i) {
    const std::string p = fmt::format("encoder.block.{}.layer.", i);
    Layer& l = layers_[i];
    l.ln0 = get(p + "0.layer_norm.weight", {d});
    l.q = rows(p + "0.SelfAttention.q.weight", {inner, d}, c0, c0 + cl);
    l.k = rows(p + "0.SelfAttention.k.weight", {inner, d}, c0, c0 + cl);
    l.v = rows(p + "0.SelfAttention.v.weight", {inner, d}, c0, c0 + cl);
    l.o = cols(p + "0.SelfAttention.o.weight", {d, inner}, c0, c0 + cl);
    l.ln1 = get(p + "1.layer_norm.weight", {d});
    if (cfg.gated) {
      l.wi0 = rows(p + "1.DenseReluDense.wi_0.weight", {cfg.d_ff, d}, f0, f0 + local_ff_);
      l.wi1 = rows(p + "1.DenseReluDense.wi_1.weight", {cfg.d_ff, d}, f0, f0 + local_ff_);
    } else {
      l.wi0 = rows(p + "1.DenseReluDense.wi.weight", {cfg.d_ff, d}, f0, f0 + local_ff_);
    }
    l.wo = cols(p + "1.DenseReluDense.wo.weight", {d, cfg.d_ff}, f0, f0 + local_ff_);
  }
  // Bytes placed on the backend (embedding, norms, this rank's slices).
  weight_bytes_ = static_cast<int64_t>(embed_.nbytes() + final_ln_.nbytes());
  for (const Layer& l : layers_)
    for (const Tensor* t : {&l.ln0, &l.q, &l.k, &l.v, &l.o, &l.ln1, &l.wi0, &l.wi1, &l.wo})
      if (t->numel() > 0) weight_bytes_ += static_cast<int64_t>(t->nbytes());
}

Tensor T5Encoder::position_bias(int64_t L) const {
  const int H = local_heads_;
  Tensor b = Tensor::empty({H, L, L}, DType::F32, MemCategory::Activations);
  std::vector<int> bucket(static_cast<size_t>(2 * L - 1));
  for (int64_t r = -(L - 1); r <= L - 1; ++r) bucket[r + L - 1] = t5_relative_bucket(r, cfg_.num_buckets, cfg_.max_distance);
  const float* tab = rel_bias_.f32();
  for (int h = 0; h < H; ++h)
    for (int64_t i = 0; i < L; ++i)
      for (int64_t j = 0; j < L; ++j)  // memory position j - query position i
        b.f32()[(h * L + i) * L + j] = tab[bucket[j - i + L - 1] * cfg_.num_heads + head0_ + h];
  return be_.device() == Device::CPU ? b : be_.upload(b, MemCategory::Activations);
}

// ReLU has no Backend op: through the host (only T5 v1.0-style configs use it; Flan-T5 is gated-gelu).
void T5Encoder::activation(Tensor& t) const {
  if (!cfg_.relu) {
    be_.gelu_tanh(t);
    return;
  }
  Tensor h = be_.download(t);
  for (int64_t i = 0; i < h.numel(); ++i) h.f32()[i] = std::max(h.f32()[i], 0.0f);
  if (be_.device() == Device::CPU) {
    be_.copy(h, t);
  } else {
    Tensor d = be_.upload(h, MemCategory::Activations);
    be_.copy(d, t);
  }
}

int64_t T5Encoder::activation_bytes(int64_t L) const {
  return t5_memory(cfg_, comm_.size(), DType::F32, L).activations;
}

T5Memory t5_memory(const T5Config& c, int tp, DType wdt, int64_t L) {
  SKV_CHECK(tp >= 1 && c.num_heads % tp == 0 && c.d_ff % tp == 0, "tensor parallel size {} does not divide the T5 "
            "encoder's num_heads {} and d_ff {}", tp, c.num_heads, c.d_ff);
  const int64_t d = c.d_model, H = c.num_heads / tp, cl = H * c.d_kv, F = c.d_ff / tp;
  const int64_t w = static_cast<int64_t>(dtype_size(wdt)), f = 4;
  T5Memory m;
  const int64_t per_layer = 2 * d * f + 4 * cl * d * w + (c.gated ? 3 : 2) * F * d * w;
  m.weights = static_cast<int64_t>(c.vocab_size) * d * f + d * f + c.num_layers * per_layer;
  // The buffers encode() allocates: x, h, y; q, k, v, their head layouts, v^T, o and its merged form; the
  // scores and the bias; the FFN's a, g (and b when gated).
  m.activations = (3 * L * d + 9 * L * cl + 2 * H * L * L + (c.gated ? 3 : 2) * L * F) * f;
  return m;
}

Tensor T5Encoder::encode(const std::vector<int64_t>& ids) const {
  const int64_t L = static_cast<int64_t>(ids.size()), d = cfg_.d_model, dk = cfg_.d_kv, H = local_heads_;
  const int64_t cl = H * dk, F = local_ff_;
  SKV_CHECK(L >= 1, "T5 encoder: no tokens");
  for (int64_t id : ids)
    SKV_CHECK(id >= 0 && id < cfg_.vocab_size, "T5 token id {} is outside the embedding table [0, {}) of {}", id,
              cfg_.vocab_size, cfg_.path);
  Backend& be = be_;
  Tensor x = be.empty({1, L, d});
  {
    Tensor x2 = x.reshape({L, d});
    be.embedding(embed_, ids, x2);
  }
  const Tensor bias = position_bias(L);
  Tensor h = be.empty({1, L, d}), y = be.empty({1, L, d});
  Tensor q = be.empty({1, L, cl}), k = be.empty({1, L, cl}), v = be.empty({1, L, cl});
  Tensor qh = be.empty({1, H, L, dk}), kh = be.empty({1, H, L, dk}), vh = be.empty({1, H, L, dk});
  Tensor vt = be.empty({H, dk, L}), s = be.empty({H, L, L}), o = be.empty({1, H, L, dk}), of = be.empty({1, L, cl});
  Tensor a = be.empty({1, L, F}), g = be.empty({L, 1, F});
  Tensor b = cfg_.gated ? be.empty({1, L, F}) : Tensor();
  for (const Layer& l : layers_) {
    // Self-attention: softmax(q k^T + bias) v per head, no 1/sqrt(d_kv).
    be.rms_norm(x, &l.ln0, cfg_.eps, h);
    be.linear(h, l.q, nullptr, q);
    be.linear(h, l.k, nullptr, k);
    be.linear(h, l.v, nullptr, v);
    be.to_heads(q, nullptr, qh);
    be.to_heads(k, nullptr, kh);
    be.to_heads(v, nullptr, vh);
    be.transpose_last2(vh.reshape({H, L, dk}), vt);
    for (int64_t hh = 0; hh < H; ++hh) {
      Tensor sh = s[hh];
      be.linear(qh[0][hh], kh[0][hh], nullptr, sh);
    }
    be.add(s, bias, s);
    be.softmax_lastdim(s);
    for (int64_t hh = 0; hh < H; ++hh) {
      Tensor oh = o[0][hh];
      be.linear(s[hh], vt[hh], nullptr, oh);
    }
    be.from_heads(o, of);
    be.linear(of, l.o, nullptr, y);
    tp_all_reduce(comm_, y);
    be.add_gated(x, y, nullptr);
    // FFN: wo(act(wi_0 h) * wi_1 h), or wo(act(wi h)).
    be.rms_norm(x, &l.ln1, cfg_.eps, h);
    be.linear(h, l.wi0, nullptr, a);
    activation(a);
    Tensor act = a;
    if (cfg_.gated) {
      be.linear(h, l.wi1, nullptr, b);
      be.fill(g, 0.0f);  // g = 0 + a * b, element-wise (add_gated with a per-row gate of one token per row)
      const Tensor gate = b.reshape({L, F});
      be.add_gated(g, a.reshape({L, 1, F}), &gate);
      act = g.reshape({1, L, F});
    }
    be.linear(act, l.wo, nullptr, y);
    tp_all_reduce(comm_, y);
    be.add_gated(x, y, nullptr);
  }
  be.rms_norm(x, &final_ln_, cfg_.eps, h);
  return be.download(h.reshape({L, d}));
}

T5TextEncoder::T5TextEncoder(const std::string& dir, Backend& be, Communicator& comm)
    : cfg(T5Config::load(dir)), tok(dir), ck(dir), enc(cfg, ck, be, comm) {
  SKV_CHECK(tok.vocab_size() <= cfg.vocab_size, "{}: the tokenizer has {} ids but vocab_size is {} (tokenizer and "
            "checkpoint do not belong together)", cfg.path, tok.vocab_size(), cfg.vocab_size);
}

InfinityText T5TextEncoder::encode(const std::vector<std::string>& prompts) const {
  SKV_CHECK(!prompts.empty(), "no prompts to encode");
  std::vector<Tensor> hs;
  InfinityText t;
  int64_t total = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto ids = tok.encode(prompts[i], 512, fmt::format("prompt {}", i + 1));
    hs.push_back(enc.encode(ids));
    t.lens.push_back(static_cast<int64_t>(ids.size()));
    total += static_cast<int64_t>(ids.size());
  }
  const int64_t d = cfg.d_model;
  t.kv_compact = Tensor::empty({total, d});
  int64_t at = 0;
  for (const Tensor& h : hs) {
    std::memcpy(t.kv_compact.f32() + at * d, h.f32(), static_cast<size_t>(h.numel()) * sizeof(float));
    at += h.dim(0);
  }
  return t;
}

namespace {

// Python's str.isspace for the code points str.strip removes.
bool py_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

uint32_t cp_at(const std::string& s, size_t i, size_t* len) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) { *len = 1; return c; }
  const int n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
  uint32_t v = c & (0x7F >> n);
  for (int k = 1; k < n; ++k) v = (v << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  *len = static_cast<size_t>(n);
  return v;
}

std::string py_strip(const std::string& s) {
  size_t b = 0, e = s.size(), len = 0;
  while (b < e && py_space(cp_at(s, b, &len))) b += len;
  while (e > b) {
    size_t p = e - 1;
    while (p > b && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) --p;
    if (!py_space(cp_at(s, p, &len))) break;
    e = p;
  }
  return s.substr(b, e - b);
}

}  // namespace

void save_t5_text_embeddings(const std::string& path, const InfinityText& text, const std::vector<std::string>& prompts,
                             const std::string& encoder) {
  SKV_CHECK(text.lens.size() == prompts.size(), "internal: {} prompts for {} embeddings", prompts.size(), text.lens.size());
  Tensor lens = Tensor::empty({static_cast<int64_t>(text.lens.size())}, DType::I64);
  for (size_t i = 0; i < text.lens.size(); ++i) lens.data<int64_t>()[i] = text.lens[i];
  std::string list = "[";
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (i) list += ", ";
    list += nlohmann::json(prompts[i]).dump(-1, ' ', true);  // ensure_ascii, as Python's json.dumps
  }
  list += "]";
  write_safetensors(path, {{"kv_compact", text.kv_compact}, {"lens", lens}},
                    {{"format", "scalekv-text-embeddings"}, {"prompts", list}, {"encoder", encoder}});
}

std::vector<std::string> read_prompts_file(const std::string& path) {
  const std::string text = read_input_file(path, 64ull << 20);
  std::vector<std::string> out;
  size_t i = 0, line = 1;
  while (i <= text.size()) {
    size_t j = i;
    while (j < text.size() && text[j] != '\n' && text[j] != '\r') ++j;
    const std::string ln = text.substr(i, j - i);
    check_utf8(ln, fmt::format("{}: line {}", path, line));
    std::string p = py_strip(ln);
    if (!p.empty()) out.push_back(std::move(p));
    if (j >= text.size()) break;
    i = j + ((text[j] == '\r' && j + 1 < text.size() && text[j + 1] == '\n') ? 2 : 1);
    ++line;
  }
  SKV_CHECK(!out.empty(), "{}: no prompts (one per line; blank lines are skipped)", path);
  return out;
}

}  // namespace skv
