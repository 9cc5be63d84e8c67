// infinity_model.h - the Infinity text-to-image transformer (FoundationVision/Infinity
// infinity/models/infinity.py + basic.py, inference path of autoregressive_infer_cfg) with the
// multi-scale KV cache of kvcache/, tensor parallel by heads.
// Text path: text_norm (RMSNorm) -> text_proj_for_sos (attentive pool: one learned query) = cond_BD,
// and text_proj_for_ca (Linear-GELU-Linear) = the cross-attention source; uncond rows use cfg_uncond.
// A block (CrossAttnBlock, fused-norm branch): shared AdaLN (ada_gss + shared_ada_lin(cond_BD)) ->
// cosine self-attention (q, k L2-normalised, q scaled by exp(min(scale_mul, log 100)), RoPE-2D per
// absolute token position) -> x += gamma1 * proj; x += ca(ca_norm(x), text) (variable-length text per
// row); x += gamma2 * FFN(GELU-tanh). The level embedding is added before the first block (or every
// chunk). Tensor parallel (Megatron): mat_qkv, ca.mat_q, ca.mat_kv and fc1 are split by heads /
// hidden units, both attention projections and fc2 by columns + one all-reduce; the text pool, the
// text MLP and the head are replicated. The text K/V of every block are computed once per request.
// A step of several requests (forward_scales, as VarModel's) packs their tokens: the token-wise layers
// and the all-reduces run once over all of them, the per-request parts (AdaLN, attention, CFG) per request.
#pragma once

#include <memory>
#include <vector>

#include "kvcache/multiscale_cache.h"
#include "parallel/communicator.h"
#include "runtime/models/block_ops.h"
#include "runtime/models/generation.h"
#include "runtime/models/infinity_config.h"
#include "runtime/models/weights.h"

namespace skv {

// Prompts as the runtime reads them: T5 features of every prompt's tokens, concatenated
// (run_infinity.encode_prompt's kv_compact), and the token count of each prompt.
struct InfinityText {
  Tensor kv_compact;           // host F32 [sum(lens), Ct5]
  std::vector<int64_t> lens;   // one entry per prompt (image)
};

// The parameters InfinityModel places, tensor by tensor as its constructor requests them (what the
// memory plan counts; InfinityModel's weight_bytes() is tested against it).
ParamCount infinity_param_count(const InfinityConfig& cfg);

class InfinityModel {
 public:
  InfinityModel(const InfinityConfig& cfg, const WeightLoader& wl, Communicator& comm);
  InfinityModel(const InfinityConfig& cfg, const SafeTensors& st, Backend& be, Communicator& comm)
      : InfinityModel(cfg, WeightLoader(st, be, "config " + cfg.path), comm) {}

  const InfinityConfig& config() const { return cfg_; }
  Backend& backend() const { return be_; }
  Communicator& comm() const { return comm_; }
  int local_heads() const { return local_heads_; }
  int head_offset() const { return head_offset_; }
  float attn_scale() const;  // 1 with cos_attn, else 1 / sqrt(head_dim) / tau
  int64_t weight_bytes() const { return weight_bytes_; }
  int64_t max_text_len() const { return cfg_uncond_.dim(0); }  // longest prompt an uncond row can mirror

  // Everything derived from the text once per request. Rows: prompts (cond), then, with CFG, the
  // same number of unconditional rows.
  struct Cond {
    int64_t rows = 0, batch = 0;
    std::vector<int64_t> row_len;    // text tokens of each row
    Tensor text_norm;                // [sum(row_len), Ct5]
    Tensor ca_kv;                    // [sum(row_len), C]
    Tensor cond_BD;                  // [R, C] pooled text (sos)
    Tensor gss;                      // [R, 6, C] shared_ada_lin(cond_BD) (shared AdaLN only)
    std::vector<Tensor> ada;         // per block [R, 6, C]: gamma1, gamma2, scale1, scale2, shift1, shift2
    Tensor head_ada;                 // [R, 2, C]: scale, shift
    std::vector<Tensor> ca_k, ca_v;  // per block [R, local heads, max row_len, head_dim]
  };
  Cond prepare_cond(const InfinityText& text, bool with_uncond) const;
  // Scale-0 input before the level embedding: cond_BD + pos_start, [R, 1, C].
  Tensor first_input(const Cond& cond) const;
  // Scale input before the level embedding from the word_embed input [B, l, d_vae], repeated to `rows`.
  Tensor embed_input(const Tensor& vae_in, int64_t rows) const;

  // One request's settings for a scale (InfinityGeneration builds them each step).
  struct ScaleArgs {
    const Schedule* schedule = nullptr;
    const Tensor* rope = nullptr;          // infinity_rope_table(schedule) on this backend
    MultiScaleKVCache* cache = nullptr;
    KVPolicy* policy = nullptr;
    GenerationObserver* observer = nullptr;
    std::vector<int> cfg_layers;           // blocks after which CFG mixes the hidden state
    double cfg = 1.0;
    bool select_at_last_scale = false;     // run (but do not apply) the policy's selection at the last scale
  };
  // One request's scale inside a packed step.
  struct ScaleItem {
    Tensor x;  // [R, l, C] before the level embedding; after forward_scales: the output (a view into the packed step)
    const Cond* cond = nullptr;
    int si = 0;
    const ScaleArgs* args = nullptr;
  };
  // Runs every block once over the tokens of all items (requests, each at its own scale of its own
  // schedule): the linear layers, LayerNorms and all-reduces over the packed [sum R * l, C] tokens; per
  // item the level embedding, AdaLN, self-attention against its own cache with its own RoPE table, cross-
  // attention to its own text, CFG mixing at its cfg layers and its observer. One item is the plain
  // single-request forward pass.
  void forward_scales(std::vector<ScaleItem>& items) const;
  // Adds the level embedding, runs every block on x [R, l, C] at scale si.
  void forward_scale(Tensor& x, const Cond& cond, int si, const ScaleArgs& a) const;
  // head(head_nm(x, cond_BD)) for the first `rows` rows of x: [rows, l, V].
  Tensor logits(const Tensor& x, const Cond& cond, int64_t rows) const;

 private:
  struct Block {
    Tensor ada_gss;                       // [1, 1, 6, C] (shared AdaLN)
    Tensor ada_w, ada_b;                  // [6C, C], [6C] (per-block AdaLN)
    Tensor qkv_w, q_bias, v_bias, head_scale;
    Tensor proj_w, proj_b;
    Tensor ca_norm_w, ca_norm_b;
    Tensor ca_q_w, ca_q_b, ca_kv_w, ca_v_bias, ca_proj_w, ca_proj_b, ca_gamma;
    Tensor fc1_w, fc1_b, fc2_w, fc2_b;
  };
  void self_attention(Tensor& x, const std::vector<PackedPart>& parts, const std::vector<ScaleItem>& items,
                      const Block& b, int layer) const;
  void cross_attention(Tensor& x, const std::vector<PackedPart>& parts, const std::vector<ScaleItem>& items,
                       const Block& b, int layer) const;
  Tensor ada_part(const Tensor& ada, int part) const;
  void all_reduce(Tensor& t) const;
  // kv [N, 2 * H * hd] (host) -> k, v [R, H, Lmax, hd] on the backend, v += v_bias (host [H * hd]).
  void pack_text_kv(const Tensor& kv, const std::vector<int64_t>& row_len, int H, int hd, const Tensor& v_bias,
                    Tensor& k, Tensor& v) const;

  const InfinityConfig& cfg_;
  Backend& be_;
  Communicator& comm_;
  int local_heads_ = 0, head_offset_ = 0, local_ffn_ = 0;
  int64_t weight_bytes_ = 0;
  Tensor cfg_uncond_, text_norm_w_;
  Tensor pool_q_, pool_kv_w_, pool_v_bias_, pool_proj_w_, pool_proj_b_;
  Tensor ca0_w_, ca0_b_, ca2_w_, ca2_b_;
  Tensor shared_ada_w_, shared_ada_b_;
  Tensor pos_start_, lvl_embed_, word_w_, word_b_;
  Tensor head_nm_w_, head_nm_b_, head_w_, head_b_;
  std::vector<Block> blocks_;
};

}  // namespace skv
