// var_model.h - the class-conditional VAR transformer (FoundationVision/VAR models/var.py,
// basic_var.py) for inference with a multi-scale KV cache, tensor parallel by heads.
// A block: x += gamma1 * proj(attn(LN(x) * (1 + scale1) + shift1)); x += gamma2 * fc2(gelu(fc1(LN(x) *
// (1 + scale2) + shift2))), AdaLN parameters from the class embedding (per block, or shared).
// Tensor parallel (Megatron): mat_qkv and fc1 are split by output rows (heads / hidden units),
// proj and fc2 by input columns and end in one all-reduce each; biases of row-parallel layers are
// added once, after the reduction. Everything else is replicated.
#pragma once

#include <cmath>
#include <memory>
#include <vector>

#include "kvcache/multiscale_cache.h"
#include "parallel/communicator.h"
#include "runtime/models/block_ops.h"
#include "runtime/models/var_config.h"
#include "runtime/models/weights.h"

namespace skv {

// Valid tensor-parallel sizes for a head count, for error messages ("1, 2, 4").
std::string valid_tp_sizes(int num_heads, int ffn_hidden);

// The parameters VarModel places, tensor by tensor as its constructor requests them (what the memory
// plan counts; VarModel's weight_bytes() is tested against it).
ParamCount var_param_count(const VarConfig& cfg);

class VarModel {
 public:
  VarModel(const VarConfig& cfg, const WeightLoader& wl, Communicator& comm);
  VarModel(const VarConfig& cfg, const SafeTensors& st, Backend& be, Communicator& comm)
      : VarModel(cfg, WeightLoader(st, be, "config " + cfg.path), comm) {}

  const VarConfig& config() const { return cfg_; }
  Backend& backend() const { return be_; }
  Communicator& comm() const { return comm_; }
  int local_heads() const { return local_heads_; }
  int head_offset() const { return head_offset_; }
  float attn_scale() const { return cfg_.attn_l2_norm ? 1.0f : 0.25f / std::sqrt(static_cast<float>(cfg_.head_dim())); }
  int64_t weight_bytes() const { return weight_bytes_; }

  // Conditioning for 2B rows (class ids, then the unconditional class for each row).
  struct Cond {
    Tensor cond_BD;               // [R, C] class embeddings
    std::vector<Tensor> ada;      // per block [R, 6, C]: gamma1, gamma2, scale1, scale2, shift1, shift2
    Tensor head_ada;              // [R, 2, C]: scale, shift
  };
  Cond prepare_cond(const std::vector<int64_t>& class_ids) const;
  // Scale-0 input: sos + pos_start + lvl_pos[0], [R, first_l, C].
  Tensor first_input(const Cond& cond) const;
  // Scale-si input from the VAE-space map [B, l, Cvae]: word_embed + lvl_pos, repeated for CFG -> [2B, l, C].
  Tensor embed_input(const Tensor& vae_in, int si) const;
  // One request's scale inside a packed step: its hidden state, conditioning, scale, cache and policy.
  struct ScaleItem {
    Tensor x;  // [R, l, C]; after forward_scales: the output (a view into the step's packed buffer)
    const Cond* cond = nullptr;
    int si = 0;
    MultiScaleKVCache* cache = nullptr;
    KVPolicy* policy = nullptr;
    const Schedule* schedule = nullptr;
  };
  // Runs every block once over the tokens of all items (requests, each at its own scale): the linear
  // layers and all-reduces over the packed [sum R * l, C] tokens, AdaLN per item, attention per item
  // against its own cache (variable-length: each item its own query length and KV). Each item's cache is
  // updated through its own policy. One item is the plain single-request forward pass.
  void forward_scales(std::vector<ScaleItem>& items) const;
  // Runs every block on x [R, l, C] for scale si, updating the cache through `policy`.
  void forward_scale(Tensor& x, const Cond& cond, int si, MultiScaleKVCache& cache, KVPolicy& policy,
                     const Schedule& schedule) const;
  // Logits [R, l, V] of the hidden state.
  Tensor logits(const Tensor& x, const Cond& cond) const;

 private:
  struct Block {
    Tensor ada_w, ada_b;     // [6C, C] (not shared) or ada_gss [6, C] (shared)
    Tensor qkv_w;            // [3 * Cl, C]
    Tensor q_bias, v_bias;   // [Cl]
    Tensor head_scale;       // [Hl] = exp(min(scale_mul, log 100)), l2-norm attention only
    Tensor proj_w, proj_b;   // [C, Cl], [C]
    Tensor fc1_w, fc1_b;     // [Fl, C], [Fl]
    Tensor fc2_w, fc2_b;     // [C, Fl], [C]
  };
  void attention_block(Tensor& x, const std::vector<PackedPart>& parts, std::vector<ScaleItem>& items,
                       const Block& b, int layer) const;
  Tensor ada_part(const Tensor& ada, int part) const;  // [R, C] slice of [R, k, C]
  void all_reduce(Tensor& t) const;

  const VarConfig& cfg_;
  Backend& be_;
  Communicator& comm_;
  int local_heads_ = 0, head_offset_ = 0, local_ffn_ = 0;
  int64_t weight_bytes_ = 0;
  Tensor word_w_, word_b_, class_emb_, pos_start_, lvl_pos_;  // lvl_pos_ [L, C]
  Tensor shared_ada_w_, shared_ada_b_;                        // [6C, C]
  Tensor head_nm_w_, head_nm_b_, head_w_, head_b_;
  std::vector<Block> blocks_;
};

}  // namespace skv
