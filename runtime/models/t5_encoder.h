// t5_encoder.h - the Flan-T5 (T5 v1.1) text encoder Infinity conditions on, read straight from a
// Hugging Face T5 folder (config.json; model.safetensors or its shards + model.safetensors.index.json;
// spiece.model + tokenizer files), weights F32/BF16/F16 on disk.
//
// The math is transformers' T5EncoderModel in F32: token embedding; per layer RMS norm (no mean, with
// weight) -> self-attention without the 1/sqrt(d) scaling plus the relative position bias (bidirectional
// buckets, table of layer 0 shared by every layer) -> residual; RMS norm -> gated-GELU(tanh) FFN (or
// ReLU, gated or not, per feed_forward_proj) -> residual; final RMS norm. Every op goes through the
// Backend (attention is composed of per-head linear / add / softmax_lastdim, because the fused
// attention op has no additive bias). Tensor parallel like the image transformer: a rank owns a
// contiguous slice of heads and of FFN units (q/k/v/wi rows, o/wo columns), and each sub-block ends in
// one all-reduce, so every rank ends with the same embeddings.
// One design choice: each prompt is encoded on its own, unpadded. T5 with an attention mask gives the
// non-padding tokens exactly that (masked keys get probability 0 and the bias depends only on relative
// positions), so the output equals scripts/encode_prompts.py's padded batch without the 512-token cost.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/models/infinity_model.h"  // InfinityText
#include "runtime/models/t5_tokenizer.h"
#include "runtime/models/weights.h"

namespace skv {

class Communicator;

struct T5Config {
  std::string path;  // config.json
  int d_model = 0, d_kv = 0, num_heads = 0, d_ff = 0, num_layers = 0, vocab_size = 0;
  int num_buckets = 32, max_distance = 128;
  float eps = 1e-6f;
  bool gated = true;      // feed_forward_proj "gated-*"
  bool relu = false;      // activation: ReLU, else GELU(tanh) ("gelu_new", what gated-gelu means)
  static T5Config load(const std::string& dir);  // DIR/config.json; throws naming the field
  int64_t inner() const { return static_cast<int64_t>(num_heads) * d_kv; }
};

// The checkpoint's tensors: model.safetensors, or the shards an index names (each opened once).
class T5Checkpoint {
 public:
  explicit T5Checkpoint(const std::string& dir);
  ~T5Checkpoint();
  // The loader of the file that holds `name`; throws "<dir>: tensor '<name>' is missing (...)" otherwise.
  const WeightLoader& loader(const std::string& name, Backend& be) const;
  bool has(const std::string& name) const;
  const std::string& dir() const { return dir_; }
  int64_t file_bytes() const { return file_bytes_; }

 private:
  struct File;
  std::string dir_, what_;
  std::vector<std::unique_ptr<File>> files_;
  std::map<std::string, size_t> where_;  // tensor -> files_ index
  int64_t file_bytes_ = 0;
};

class T5Encoder {
 public:
  // Loads this rank's shard of the weights (num_heads and d_ff must divide by comm.size()).
  T5Encoder(const T5Config& cfg, const T5Checkpoint& ck, Backend& be, Communicator& comm);
  // last_hidden_state of one token sequence: host F32 [ids.size(), d_model], identical on every rank.
  Tensor encode(const std::vector<int64_t>& ids) const;
  const T5Config& config() const { return cfg_; }
  int64_t weight_bytes() const { return weight_bytes_; }
  // Bytes of the activation buffers encode() allocates for a sequence of `len` tokens on one rank.
  int64_t activation_bytes(int64_t len) const;

 private:
  struct Layer {
    Tensor ln0, q, k, v, o, ln1, wi0, wi1, wo;
  };
  Tensor position_bias(int64_t L) const;  // [local heads, L, L] on the backend
  void activation(Tensor& t) const;
  T5Config cfg_;
  Backend& be_;
  Communicator& comm_;
  int local_heads_ = 0, head0_ = 0;
  int64_t local_ff_ = 0;
  Tensor embed_, final_ln_, rel_bias_;  // rel_bias_: host F32 [num_buckets, num_heads]
  std::vector<Layer> layers_;
  int64_t weight_bytes_ = 0;
};

// Everything `--t5 DIR` needs: config, tokenizer, checkpoint, this rank's encoder.
struct T5TextEncoder {
  T5TextEncoder(const std::string& dir, Backend& be, Communicator& comm);
  T5Config cfg;
  T5Tokenizer tok;
  T5Checkpoint ck;
  T5Encoder enc;
  // Prompts -> the text-embeddings Infinity reads (kv_compact F32 [total, d_model], lens), as
  // scripts/encode_prompts.py makes them (max_length 512).
  InfinityText encode(const std::vector<std::string>& prompts) const;
};

// Writes `text` as scripts/encode_prompts.py does: kv_compact F32, lens I64, metadata format, prompts (Python's
// json.dumps of the list: ASCII-escaped, ", " between items) and encoder (`encoder`, the --t5 argument).
void save_t5_text_embeddings(const std::string& path, const InfinityText& text, const std::vector<std::string>& prompts,
                             const std::string& encoder);

// Prompts from a text file as scripts/encode_prompts.py reads them: one per line (\n, \r\n or \r), each
// stripped of surrounding whitespace (Python's str.strip), blank lines skipped. Errors: no such file,
// not UTF-8 (naming the line), no prompts.
std::vector<std::string> read_prompts_file(const std::string& path);

// Memory of the encoder on one of `tp` ranks, from its config alone: weights placed on the backend (embedding
// table and norms in F32, linear weights in `weight_dtype`) and the activation buffers of one `tokens`-long
// prompt (encode() runs one prompt at a time). T5Encoder::weight_bytes() equals `weights` (tested).
struct T5Memory {
  int64_t weights = 0, activations = 0;
};
T5Memory t5_memory(const T5Config& cfg, int tp, DType weight_dtype, int64_t tokens);

// The bucket of a relative position (memory - query) exactly as transformers computes it in float32.
int t5_relative_bucket(int64_t relative_position, int num_buckets, int max_distance);

}  // namespace skv
