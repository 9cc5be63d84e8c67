// kv_select.cu - the KV policies' device ops (kv_select.h): query scores over a segment table, the
// ASI attention mass, and the selection stage (pool + top-k-keep) of kvcache/selection.h.
// Scoring: one block per (row, head); each listed query's logits over every key in shared memory.
// Pooling: one thread per output column. Top-k: one block per (row, head); an MSB-first radix select (kmath::RadixSelect, 4 passes of
// 8 bits over the row) finds the k-th largest value T, then one ordered pass with block-wide prefix
// sums (cub::BlockScan) writes, in ascending column order, the window columns, every value > T and the
// first `remaining` values == T: the lower column wins ties and the output is sorted without a sort.
#include <cub/block/block_scan.cuh>

#include <algorithm>

#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_device.h"
#include "runtime/cuda/kv_select.h"

namespace skv::cuda {

namespace {

constexpr int kTopkThreads = 256;

__global__ void pool1d_kernel(const float* in, float* out, int64_t rows, int64_t n, int kernel, bool is_max,
                              const int32_t* win, int nw, bool mask) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < rows * n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[e] = kmath::pool_at(in + (e / n) * n, n, e % n, kernel, is_max, win, nw, mask);
}

// The k-th largest of v[c] over the candidates c < n (is_candidate(c)), by four 8-bit radix passes;
// leaves the result in *sel (prefix = the k-th largest key, remaining = how many keys equal to it belong
// to the top k). Call from every thread of the block; hist (256) and sel live in shared memory.
template <class Pred>
__device__ void block_radix_select(const float* v, int64_t n, int64_t k, Pred is_candidate, int32_t* hist,
                                   kmath::RadixSelect* sel) {
  __syncthreads();
  if (threadIdx.x == 0) *sel = kmath::radix_select_init(k);
  __syncthreads();
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    const kmath::RadixSelect cur = *sel;
    for (int64_t c = threadIdx.x; c < n; c += blockDim.x) {
      if (!is_candidate(c)) continue;
      const uint32_t key = kmath::float_order_key(v[c]);
      if (kmath::radix_select_matches(cur, key)) atomicAdd(&hist[kmath::radix_digit(key, shift)], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) kmath::radix_select_step(*sel, hist, shift);
    __syncthreads();
  }
}

__global__ void __launch_bounds__(kTopkThreads) topk_keep_kernel(const float* pooled, int64_t n, const int32_t* win_cols,
                                                                 int nw, int64_t k, int32_t* kept) {
  using Scan = cub::BlockScan<int, kTopkThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ int32_t hist[256];
  __shared__ int32_t wins[kMaxKeepWindow];
  __shared__ kmath::RadixSelect sel;
  const float* s = pooled + static_cast<int64_t>(blockIdx.x) * n;
  int32_t* out = kept + static_cast<int64_t>(blockIdx.x) * (k + nw);
  for (int i = threadIdx.x; i < nw; i += blockDim.x) wins[i] = win_cols[i];
  __syncthreads();
  block_radix_select(s, n, k, [&](int64_t c) { return !kmath::in_sorted(wins, nw, c); }, hist, &sel);
  const uint32_t T = sel.prefix;
  const int64_t take_eq = sel.remaining;

  int64_t eq_seen = 0, written = 0;  // identical in every thread (block aggregates)
  for (int64_t base = 0; base < n; base += blockDim.x) {
    const int64_t c = base + threadIdx.x;
    bool win = false, gt = false, eq = false;
    if (c < n) {
      win = kmath::in_sorted(wins, nw, c);
      if (!win) {
        const uint32_t key = kmath::float_order_key(s[c]);
        gt = key > T;
        eq = key == T;
      }
    }
    int eq_rank = 0, eq_total = 0;
    Scan(scan_tmp).ExclusiveSum(eq ? 1 : 0, eq_rank, eq_total);
    __syncthreads();
    const bool take = win || gt || (eq && eq_seen + eq_rank < take_eq);
    int pos = 0, taken = 0;
    Scan(scan_tmp).ExclusiveSum(take ? 1 : 0, pos, taken);
    __syncthreads();
    if (take) out[written + pos] = static_cast<int32_t>(c);
    eq_seen += eq_total;
    written += taken;
  }
}

// ---- query_scores / attention_mass (the scalekv branch's window_scores and attention_mass) ---------------
constexpr int kQueryThreads = 256;
enum QueryMode { kRawSum = 0, kSoftmaxMean = 1, kMass = 2 };

struct QuerySeg {
  const float* k;  // already advanced by the segment's start
  int64_t cap, len, col;  // col: first output column of the segment
};
struct QueryArgs {
  const float* q;          // [RH, Lq, D]
  const int64_t* q_idx;    // [nq] (device)
  float* out;              // [RH, L] or [RH, 2] (mass)
  int64_t Lq, D, L, n_hist, topk;
  float scale;
  int nq, nseg, mode;
  const QuerySeg* seg;     // device table [nseg], ordered by col
};

__device__ __forceinline__ float block_max_f(float v, float* red) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  return warp_max(lane < nw ? red[lane] : -INFINITY);
}
__device__ __forceinline__ float block_sum_f(float v, float* red) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  return warp_sum(lane < nw ? red[lane] : 0.0f);
}

// One block per (row, head); the listed queries one after the other, each query's L logits in shared
// memory. Thread t owns output columns t, t + blockDim, ... for every query (so no atomics, and the sum
// over queries runs in query order, as on the CPU).
__global__ void __launch_bounds__(kQueryThreads) query_scores_kernel(const QueryArgs a) {
  extern __shared__ float qsm[];
  float* logit = qsm;       // [L]
  float* qv = qsm + a.L;    // [D]
  __shared__ float redf[32];
  __shared__ double redd[32];
  __shared__ int32_t hist[256];
  __shared__ kmath::RadixSelect sel;
  const int64_t rh = blockIdx.x, D = a.D;
  float* out = a.out + rh * (a.mode == kMass ? 2 : a.L);
  double cur_sum = 0, top_sum = 0;
  for (int i = 0; i < a.nq; ++i) {
    __syncthreads();  // the previous query's logits and q are consumed
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) qv[d] = a.q[(rh * a.Lq + a.q_idx[i]) * D + d];
    __syncthreads();
    int s = 0;  // a thread's columns only grow, so its segment index only moves forward
    for (int64_t c = threadIdx.x; c < a.L; c += blockDim.x) {
      while (c >= a.seg[s].col + a.seg[s].len) ++s;
      const float* k = a.seg[s].k + (rh * a.seg[s].cap + (c - a.seg[s].col)) * D;
      float dot = 0.0f;
      for (int64_t d = 0; d < D; ++d) dot += qv[d] * k[d];
      logit[c] = a.scale * dot;
    }
    if (a.mode == kRawSum) {
      for (int64_t c = threadIdx.x; c < a.L; c += blockDim.x) out[c] = (i == 0 ? 0.0f : out[c]) + logit[c];
      continue;
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int64_t c = threadIdx.x; c < a.L; c += blockDim.x) mx = fmaxf(mx, logit[c]);
    mx = block_max_f(mx, redf);
    float sum = 0.0f;
    for (int64_t c = threadIdx.x; c < a.L; c += blockDim.x) sum += expf(logit[c] - mx);
    const float inv = 1.0f / block_sum_f(sum, redf);
    if (a.mode == kSoftmaxMean) {
      for (int64_t c = threadIdx.x; c < a.L; c += blockDim.x) out[c] = (i == 0 ? 0.0f : out[c]) + expf(logit[c] - mx) * inv;
      continue;
    }
    for (int64_t c = threadIdx.x; c < a.L; c += blockDim.x) logit[c] = expf(logit[c] - mx) * inv;  // probabilities
    __syncthreads();
    double cs = 0;
    for (int64_t c = a.n_hist + threadIdx.x; c < a.L; c += blockDim.x) cs += logit[c];
    cur_sum += block_sum_d(cs, redd);
    const int64_t k = a.topk < a.n_hist ? a.topk : a.n_hist;
    if (k > 0) {  // sum of the k largest history probabilities: all above the k-th, plus its ties
      block_radix_select(logit, a.n_hist, k, [](int64_t) { return true; }, hist, &sel);
      const uint32_t T = sel.prefix;
      double part = 0;
      for (int64_t c = threadIdx.x; c < a.n_hist; c += blockDim.x)
        if (kmath::float_order_key(logit[c]) > T) part += logit[c];
      top_sum += block_sum_d(part, redd) + static_cast<double>(sel.remaining) * kmath::float_from_order_key(T);
    }
  }
  if (a.mode == kSoftmaxMean)
    for (int64_t c = threadIdx.x; c < a.L; c += blockDim.x) out[c] = out[c] / static_cast<float>(a.nq);
  if (a.mode == kMass && threadIdx.x == 0) {
    out[0] = static_cast<float>(cur_sum / a.nq);
    out[1] = static_cast<float>(top_sum / a.nq);
  }
}

void run_query_kernel(const Tensor& q, const std::vector<int64_t>& q_idx, const std::vector<KVSegment>& segs,
                      float scale, int mode, int64_t n_hist, int64_t topk, Tensor& out, const char* what) {
  check_cuda_f32(q, what);
  check_cuda_f32(out, what);
  SKV_CHECK(q.ndim() == 4, "{}: q must be [R, H, Lq, D], got {}", what, q.describe());
  const int64_t R = q.dim(0), H = q.dim(1), Lq = q.dim(2), D = q.dim(3);
  SKV_CHECK(!q_idx.empty(), "{}: no queries", what);
  for (int64_t i : q_idx) SKV_CHECK(i >= 0 && i < Lq, "{}: query {} outside [0, {})", what, i, Lq);
  QueryArgs a{};
  a.q = fptr(q);
  a.out = fptr(out);
  a.Lq = Lq;
  a.D = D;
  a.scale = scale;
  a.nq = static_cast<int>(q_idx.size());
  a.mode = mode;
  int64_t L = 0;
  std::vector<QuerySeg> table;
  for (const auto& s : segs) {
    check_cuda_f32(*s.k, what);
    const int64_t start = s.start;
    SKV_CHECK(s.k->ndim() == 4 && s.k->dim(0) == R && s.k->dim(1) == H && s.k->dim(3) == D && s.row_len.empty() &&
                  start >= 0 && start + s.len <= s.k->dim(2),
              "{}: segment {} [{}, +{}) for q {}", what, s.k->describe(), start, s.len, q.describe());
    if (s.len == 0) continue;
    table.push_back(QuerySeg{fptr(*s.k) + start * D, s.k->dim(2), s.len, L});
    L += s.len;
  }
  a.L = L;
  a.n_hist = n_hist;
  a.topk = topk;
  if (mode == kMass)
    SKV_CHECK(n_hist >= 0 && n_hist <= L && topk >= 0 && out.numel() == R * H * 2,
              "{}: n_hist {} of {} keys, topk {}, out {}", what, n_hist, L, topk, out.describe());
  else
    SKV_CHECK(out.numel() == R * H * L, "{}: out {} for {} keys", what, out.describe(), L);
  if (R * H == 0) return;
  if (L == 0) {  // no keys: zero scores (the CPU reference's loops leave nothing else)
    SKV_CUDA_CHECK(cudaMemsetAsync(out.raw(), 0, out.nbytes(), stream()));
    return;
  }
  const size_t smem = static_cast<size_t>(L + D) * sizeof(float);
  prepare_smem(reinterpret_cast<const void*>(query_scores_kernel), smem, what);
  Tensor d_table = upload_structs(table);
  a.nseg = static_cast<int>(table.size());
  a.seg = reinterpret_cast<const QuerySeg*>(d_table.raw());
  Tensor d_idx = upload_vector(q_idx, DType::I64);
  a.q_idx = d_idx.data<int64_t>();
  OpTimer timer("kv_select", 2.0 * R * H * L * D * q_idx.size(), static_cast<double>(R * H * L * D * 4 * q_idx.size()));
  query_scores_kernel<<<static_cast<unsigned>(R * H), kQueryThreads, smem, stream()>>>(a);
  SKV_CUDA_LAUNCHED(what);
}

}  // namespace

void select_kept(const Tensor& scores, const KeepSpec& spec, Tensor& kept) {
  check_cuda_f32(scores, "select_kept scores");
  check_cuda_tensor(kept, "select_kept kept");
  SKV_CHECK(scores.ndim() == 3, "select_kept: scores must be [R, H, n], got {}", scores.describe());
  const int64_t RH = scores.dim(0) * scores.dim(1), n = scores.dim(2), nw = static_cast<int64_t>(spec.window.size());
  const int64_t k = spec.budget - nw;
  // kvcache/selection.cpp's select_kept() has checked the spec for every backend; these are this kernel's limits.
  SKV_CHECK(nw <= kMaxKeepWindow && k >= 0 && k <= n - nw && n <= 0x7fffffff && RH <= 0x7fffffff,
            "select_kept: window {} budget {} for {}", nw, spec.budget, scores.describe());
  SKV_CHECK(kept.dtype() == DType::I32 && kept.numel() == RH * spec.budget, "select_kept: kept {} for {} x {}",
            kept.describe(), RH, spec.budget);
  if (RH == 0 || spec.budget == 0) return;
  std::vector<int32_t> win(spec.window.begin(), spec.window.end());
  if (win.empty()) win.push_back(0);  // never read (nw = 0): keeps the upload non-empty
  Tensor d_win = upload_vector(win, DType::I32);
  Tensor pooled = Tensor::empty(scores.shape(), DType::F32, MemCategory::Workspace, &ctx().alloc, Device::CUDA);
  OpTimer timer("kv_select", 0, static_cast<double>(scores.nbytes()) * 6);
  pool1d_kernel<<<grid1d(RH * n), kmath::kEltThreads, 0, stream()>>>(
      fptr(scores), fptr(pooled), RH, n, spec.kernel, spec.pool == PoolKind::Max, d_win.data<int32_t>(), static_cast<int>(nw),
      spec.mask_window_keys);
  SKV_CUDA_LAUNCHED("select_kept pool");
  topk_keep_kernel<<<static_cast<unsigned>(RH), kTopkThreads, 0, stream()>>>(
      fptr(pooled), n, d_win.data<int32_t>(), static_cast<int>(nw), k, kept.data<int32_t>());
  SKV_CUDA_LAUNCHED("select_kept top-k");
}

void query_scores(const Tensor& q, const std::vector<int64_t>& q_idx, const std::vector<KVSegment>& segs, float scale,
                  bool softmax_mean, Tensor& out) {
  run_query_kernel(q, q_idx, segs, scale, softmax_mean ? kSoftmaxMean : kRawSum, 0, 0, out, "window_scores");
}

void attention_mass(const Tensor& q, const std::vector<int64_t>& q_idx, const std::vector<KVSegment>& segs,
                    int64_t n_hist, float scale, int64_t topk, Tensor& out) {
  run_query_kernel(q, q_idx, segs, scale, kMass, n_hist, topk, out, "attention_mass");
}

}  // namespace skv::cuda
