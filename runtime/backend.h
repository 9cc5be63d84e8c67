// backend.h - the ops a model needs, behind one small interface (ggml-style).
// `cpu/` is the reference implementation and runs everywhere; `cuda/` implements the same interface
// and is tested op by op against it (tests/runtime/test_backend_ops.cpp). Models only talk to a
// Backend, so the device never leaks into model code. Layout conventions (all row-major, F32 unless
// a weight says otherwise):
//   activations  [rows, tokens, channels]                       (rows = batch x 2 with CFG)
//   heads        [rows, heads, tokens, head_dim]                (q, k, v and the KV cache)
//   images       [N, C, H, W]  (or [N, C, T, H, W] for trilinear)
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace skv {

// One block of keys/values for attention: k, v are [rows, heads, capacity, head_dim]; tokens
// [start, start + len) of every (row, head) are used. `row_len`, when not empty, gives a per-row length
// instead (variable-length text). `start` lets a segment be an extent of the KV cache's slot pool.
struct KVSegment {
  const Tensor* k = nullptr;
  const Tensor* v = nullptr;
  int64_t len = 0;
  std::vector<int64_t> row_len;
  int64_t start = 0;
};

// One extent of a KV store (Backend::gather_extents): tokens [start, start + len) of every (row, head) of t,
// [rows, heads, capacity, head_dim] (a chunk of the KV cache's slot pool).
struct KVExtent {
  Tensor* t = nullptr;
  int64_t start = 0, len = 0;
};

// One request's attention in a packed step (Backend::attention_varlen): its queries against its own keys
// and values.
struct AttentionJob {
  const Tensor* q = nullptr;    // [rows, heads, Lq, head_dim]
  std::vector<KVSegment> segs;  // its keys/values (attention's segments)
  Tensor* out = nullptr;        // [rows, Lq, heads * head_dim]
};

// How window_scores turns the listed queries' logits into one score per key.
enum class ScoreMode {
  RawSum,       // sum over the queries of scale * q.k (the released ScaleKV code: no softmax)
  SoftmaxMean,  // mean over the queries of softmax_j(scale * q.k_j) over all keys (SnapKV, the ScaleKV paper)
};

// The selection stage of the observation-window policies (ScaleKV, SnapKV, PyramidKV), one (row, head)
// of scores [R, H, n] at a time; kvcache/selection.h states it exactly and holds its host implementation:
//   1. the window columns read as -inf when mask_window_keys (the released ScaleKV code);
//   2. pool along the row (F.max_pool1d: -inf padding / F.avg_pool1d: zero padding, / kernel);
//   3. the (budget - |window|) largest pooled values over the non-window columns (equal values: the
//      lower column first);
//   4. kept = those columns and the window, ascending.
enum class PoolKind { Max, Avg };
struct KeepSpec {
  std::vector<int64_t> window;    // ascending, distinct columns: always kept, never candidates
  bool mask_window_keys = false;
  PoolKind pool = PoolKind::Max;
  int kernel = 5;                 // odd
  int64_t budget = 0;             // columns kept per (row, head), window included
};
// What one select_kept launch holds (window columns in shared memory); checked on every backend.
constexpr int kMaxKeepWindow = 256;

enum class Interp { Nearest, Bilinear, Bicubic, Area, Trilinear };
const char* interp_name(Interp m);

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;
  virtual Allocator& allocator() = 0;
  // The device index this backend's stream and memory live on (0 for the CPU).
  virtual int device_ordinal() const { return 0; }
  // The stream every op of this backend is queued on (a cudaStream_t; null for the CPU). Device
  // collectives must run on it, or they are not ordered after the kernels that write their input.
  virtual void* native_stream() const { return nullptr; }
  // The device's free and total bytes as its driver reports them (every process and cache included), when it
  // can tell (CUDA: cudaMemGetInfo); false on the CPU, whose memory the accounting allocator alone measures.
  virtual bool device_memory_info(int64_t* free_bytes, int64_t* total_bytes) const { return false; }

  Tensor empty(const Shape& shape, DType dt = DType::F32, MemCategory cat = MemCategory::Activations);
  Tensor zeros(const Shape& shape, DType dt = DType::F32, MemCategory cat = MemCategory::Activations);
  virtual Tensor upload(const Tensor& host, MemCategory cat) = 0;  // host -> this device (copy)
  virtual Tensor download(const Tensor& t) = 0;                    // this device -> host (copy)
  virtual void copy(const Tensor& src, Tensor& dst) = 0;           // same device, same byte size
  virtual void fill(Tensor& t, float v) = 0;
  virtual void synchronize() {}

  // Dtype that linear-layer weights are kept in on this backend: WeightLoader converts the tensors a
  // model requests with WeightUse::Matmul. F32 by default and for parity runs; F16/BF16 halve the
  // weight bytes (on CUDA: tensor-core GEMMs, activations rounded to that dtype, FP32 accumulation).
  void set_weight_dtype(DType dt);
  DType weight_dtype() const { return weight_dtype_; }
  // Dtype the products of linear layers (and, on the CPU, convolutions) take their inputs in: F32, the
  // default and the golden path, or BF16: inputs rounded to bf16, F32 accumulation, linear weights kept
  // in BF16 (set_weight_dtype(BF16) follows). Both backends meet that contract: CUDA's tensor-core GEMMs
  // for bf16 weights, the CPU's oneDNN bf16 kernels, which need avx512_bf16 (the CPU backend fails
  // naming the missing instruction set). CUDA's convolutions stay F32.
  void set_compute_dtype(DType dt);
  DType compute_dtype() const { return compute_dtype_; }
  // Whether this backend (on this machine) runs `dt` products; `why` gets what is missing when not.
  virtual bool compute_dtype_supported(DType dt, std::string* why = nullptr) const;

  // y[M,N] = x[M,K] . w[N,K]^T (+ bias[N]). x, y F32; w F32/F16/BF16.
  virtual void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) = 0;
  // Normalisation over the last axis (w, b may be null: no affine).
  virtual void layer_norm(const Tensor& x, const Tensor* w, const Tensor* b, float eps, Tensor& y) = 0;
  virtual void rms_norm(const Tensor& x, const Tensor* w, float eps, Tensor& y) = 0;
  // AdaLN: y[r,t,:] = x[r,t,:] * (1 + scale[r,:]) + shift[r,:]; scale, shift are [rows, C].
  virtual void modulate(const Tensor& x, const Tensor& scale, const Tensor& shift, Tensor& y) = 0;
  // x[r,t,:] += y[r,t,:] * gate[r,:] (gate null: plain add). x, y [rows, tokens, C].
  virtual void add_gated(Tensor& x, const Tensor& y, const Tensor* gate) = 0;
  // y = a + b, where b is broadcast over the leading axes of a (b.numel() divides a.numel()).
  virtual void add(const Tensor& a, const Tensor& b, Tensor& y) = 0;
  virtual void scale(Tensor& x, float s) = 0;
  // out = a * x + b * y (element-wise; out may alias x or y).
  virtual void axpby(const Tensor& x, float a, const Tensor& y, float b, Tensor& out) = 0;
  // y[b] = x[b]^T for x [B, M, N] -> y [B, N, M].
  virtual void transpose_last2(const Tensor& x, Tensor& y) = 0;
  virtual void gelu_tanh(Tensor& x) = 0;
  virtual void silu(const Tensor& x, Tensor& y) = 0;
  virtual void softmax_lastdim(Tensor& x) = 0;
  // y[i,:] = table[idx[i],:]
  virtual void embedding(const Tensor& table, const std::vector<int64_t>& idx, Tensor& y) = 0;

  // [rows, tokens, 3*H*hd] -> q, k, v [rows, H, tokens, hd], adding the optional biases ([H*hd]).
  virtual void split_qkv(const Tensor& qkv, const Tensor* q_bias, const Tensor* k_bias, const Tensor* v_bias,
                         Tensor& q, Tensor& k, Tensor& v) = 0;
  // [rows, tokens, H*hd] -> [rows, H, tokens, hd] (+ bias), and back.
  virtual void to_heads(const Tensor& x, const Tensor* bias, Tensor& y) = 0;
  virtual void from_heads(const Tensor& x, Tensor& y) = 0;
  // x [rows, H, tokens, hd]: x = x / max(||x||, 1e-12) * head_scale[h] (head_scale null: 1).
  virtual void l2norm_heads(Tensor& x, const Tensor* head_scale) = 0;
  // x [rows, H, tokens, hd]: rotate pairs (x[2i], x[2i+1]) of token t by cos/sin[pos[t], i];
  // cos_sin is [2, P, hd/2], pos holds the absolute position of each of the tokens.
  virtual void rope(Tensor& x, const Tensor& cos_sin, const std::vector<int64_t>& pos) = 0;
  // out [rows, Lq, H*hd] = softmax(scale * q k^T) v over the concatenation of the segments.
  virtual void attention(const Tensor& q, const std::vector<KVSegment>& segs, float scale, Tensor& out) = 0;
  // Every request of a packed step in one call, each with its own queries, lengths and KV segments (the
  // varlen shape of FlashAttention's and FlashInfer's ragged-KV APIs): the CPU runs every job's tiles in
  // one parallel loop, CUDA in one kernel launch. Job j's output equals attention(*q, segs, scale, *out)
  // bit for bit; all jobs share head_dim (one model).
  virtual void attention_varlen(const std::vector<AttentionJob>& jobs, float scale) = 0;

  // KV-cache moves. dst[r,h,dst_off+i,:] = src[r,h,i,:] for i < n (src [R,H,Ls,hd], dst [R,H,cap,hd]).
  virtual void copy_tokens(const Tensor& src, int64_t n, Tensor& dst, int64_t dst_off) = 0;
  // In-place compaction of a layer's store: for each (r,h) and j < n, store[r,h,j] = token kept[r,h,j] of
  // [store[r,h,0:hist_len], cur[r,h,:]]. kept (I32 [R,H,n], this device) is ascending per (r,h), so
  // j <= kept[j] and reading ahead of the write position is safe.
  virtual void gather_tokens(Tensor& store, int64_t hist_len, const Tensor& cur, const Tensor& kept, int64_t n) = 0;
  // The same over a store kept as a list of extents (the KV cache's stores, kvcache/multiscale_cache.h): the
  // store's tokens are its extents' token ranges one after another (one R, H, hd and dtype). For each (r,h) and
  // j in [first, n), with i = kept[r,h,j] (kept I32 [R,H,n], or [n] shared by every (r,h), on this device):
  // token j = i < hist_len ? token i : cur[r,h,i - hist_len]. kept is ascending and extents do not overlap, so j
  // in increasing order never overwrites a token still to be read (in place). An append is first = hist_len
  // with kept[j] = j. check_gather_extents() states the checks every backend makes.
  virtual void gather_extents(const std::vector<KVExtent>& store, int64_t hist_len, const Tensor& cur,
                              const Tensor& kept, int64_t first, int64_t n) = 0;
  // Per-key importance from a few queries (KV policies): q [R,H,Lq,hd], q_idx the query positions used (repeats
  // allowed), segs the keys in order; out [R,H,Ltot] F32 (Ltot = sum of segment lengths), see ScoreMode.
  virtual void window_scores(const Tensor& q, const std::vector<int64_t>& q_idx, const std::vector<KVSegment>& segs,
                             float scale, ScoreMode mode, Tensor& out);
  // Attention mass statistics for the Attention Selectivity Index: with a_ij = softmax_j(scale * q_i.k_j) over all
  // keys of segs, whose first n_hist keys are history and the rest the current map, for each (r,h):
  // out[r,h,0] = mean_i sum_{j >= n_hist} a_ij, out[r,h,1] = mean_i (sum of the topk largest a_ij over j < n_hist).
  virtual void attention_mass(const Tensor& q, const std::vector<int64_t>& q_idx, const std::vector<KVSegment>& segs,
                              int64_t n_hist, float scale, int64_t topk, Tensor& out);
  // The selection stage (KeepSpec above) on this device: scores F32 [R,H,n] -> kept I32 [R,H,budget], both on
  // this backend, with no host round trip. Reached through kvcache/selection.h's select_kept(), which checks
  // the spec and runs its host implementation on the CPU; the default fails.
  virtual void select_kept(const Tensor& scores, const KeepSpec& spec, Tensor& kept);

  // Images.
  virtual void conv2d(const Tensor& x, const Tensor& w, const Tensor* b, int stride, int pad, Tensor& y) = 0;
  virtual void group_norm(const Tensor& x, int groups, const Tensor* w, const Tensor* b, float eps, Tensor& y) = 0;
  // F.interpolate(x, size=y's spatial size, mode, align_corners=False), PyTorch-exact.
  virtual void interpolate(const Tensor& x, Interp mode, Tensor& y) = 0;

 private:
  DType weight_dtype_ = DType::F32;
  DType compute_dtype_ = DType::F32;
};

// gather_extents' arguments, checked the same way on every backend (a clear error, never a stray write):
// the store's token index of each extent's first token, R, H, D and the tokens the extents hold.
struct ExtentLayout {
  std::vector<int64_t> first;  // [extents]
  int64_t rows = 0, heads = 0, head_dim = 0, capacity = 0, cur_len = 0;
  bool shared_kept = false;
};
ExtentLayout check_gather_extents(const std::vector<KVExtent>& store, int64_t hist_len, const Tensor& cur,
                                  const Tensor& kept, int64_t first, int64_t n);

// The CPU reference backend (OpenBLAS + OpenMP); one per process.
Backend& cpu_backend();
// The backend for a device name ("cpu", "cuda"); throws with the reason when it is not available.
Backend& backend_for(const std::string& device);
bool cuda_available(std::string* why = nullptr);

}  // namespace skv
