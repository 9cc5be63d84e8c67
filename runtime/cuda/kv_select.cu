// kv_select.cu - observation-window scoring, 1-D pooling and top-k-keep on the device (kv_select.h).
// Scoring: one block per (row, head), 4 warps; warp w owns window queries 4w..4w+3, lane j key j of a
// 32-key shared-memory tile (the attention kernel's layout); the 4 warps' partial sums meet in shared
// memory. Top-k: one block per (row, head); an MSB-first radix select (kmath::RadixSelect, 4 passes of
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

constexpr int kScoreWarps = 4, kScoreQueriesPerWarp = 4, kScoreTile = 32;
static_assert(kScoreWarps * kScoreQueriesPerWarp == kScaleKVWindow, "one block scores the whole window");
constexpr int kTopkThreads = 256;
constexpr int kMaxWindowCols = 256;

__device__ __forceinline__ bool in_sorted(const int32_t* a, int n, int64_t v) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (a[mid] < v)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < n && a[lo] == v;
}

struct ScoreArgs {
  const float* q;       // [RH, Lc, D]
  const float* hist_k;  // [RH, cap, D]
  const float* cur_k;   // [RH, Lc, D]
  float* scores;        // [RH, total]
  int64_t hist_len, cap, Lc, D, total;
  float scale;
  int nw;
  int32_t win[kScaleKVWindow];
};

// Loads the 32-key tile starting at column t0 into Ks (row stride D + 1) and returns how many are valid.
__device__ int load_key_tile(const ScoreArgs& a, int64_t rh, int64_t t0, float* Ks) {
  const int64_t D = a.D;
  const int n = static_cast<int>(a.total - t0 < kScoreTile ? a.total - t0 : kScoreTile);
  for (int64_t i = threadIdx.x; i < kScoreTile * D; i += blockDim.x) {
    const int64_t j = i / D, d = i % D, c = t0 + j;
    float v = 0.0f;
    if (j < n) v = c < a.hist_len ? a.hist_k[(rh * a.cap + c) * D + d] : a.cur_k[(rh * a.Lc + (c - a.hist_len)) * D + d];
    Ks[j * (D + 1) + d] = v;
  }
  return n;
}

template <bool kSoftmax>
__global__ void __launch_bounds__(kScoreWarps * 32) window_scores_kernel(const ScoreArgs a) {
  extern __shared__ float smem[];
  const int64_t D = a.D;
  float* Qs = smem;                            // [16][D] window queries
  float* Ks = Qs + kScaleKVWindow * D;         // [32][D + 1]
  float* part = Ks + kScoreTile * (D + 1);     // [kScoreWarps][32] per-warp partial sums
  const int64_t rh = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t i = threadIdx.x; i < kScaleKVWindow * D; i += blockDim.x) {
    const int w = static_cast<int>(i / D);
    Qs[i] = w < a.nw ? a.q[(rh * a.Lc + a.win[w]) * D + i % D] : 0.0f;
  }
  auto is_window_col = [&](int64_t c) { return c >= a.hist_len && in_sorted(a.win, a.nw, c - a.hist_len); };
  // logits[qq] of key `lane` (column c) for this warp's queries; -inf where not a candidate.
  auto logits = [&](int n, int64_t c, float out[kScoreQueriesPerWarp]) {
    const float* kr = Ks + lane * (D + 1);
    for (int qq = 0; qq < kScoreQueriesPerWarp; ++qq) out[qq] = 0.0f;
    for (int64_t d = 0; d < D; ++d) {
      const float kd = kr[d];
      for (int qq = 0; qq < kScoreQueriesPerWarp; ++qq) out[qq] += Qs[(warp * kScoreQueriesPerWarp + qq) * D + d] * kd;
    }
    const bool valid = lane < n && !is_window_col(c);
    for (int qq = 0; qq < kScoreQueriesPerWarp; ++qq) {
      const bool q_ok = warp * kScoreQueriesPerWarp + qq < a.nw;
      out[qq] = (valid && q_ok) ? a.scale * out[qq] : -INFINITY;
    }
  };

  kmath::OnlineSoftmax st[kScoreQueriesPerWarp];
  for (int qq = 0; qq < kScoreQueriesPerWarp; ++qq) st[qq] = kmath::online_softmax_init();
  if (kSoftmax) {  // pass 1: each window query's max and normaliser over the candidate columns
    for (int64_t t0 = 0; t0 < a.total; t0 += kScoreTile) {
      __syncthreads();
      const int n = load_key_tile(a, rh, t0, Ks);
      __syncthreads();
      float s[kScoreQueriesPerWarp];
      logits(n, t0 + lane, s);
      for (int qq = 0; qq < kScoreQueriesPerWarp; ++qq) {
        kmath::online_softmax_enter(st[qq], warp_max(s[qq]));
        st[qq].l += warp_sum(kmath::online_softmax_weight(st[qq], s[qq]));
      }
    }
  }
  for (int64_t t0 = 0; t0 < a.total; t0 += kScoreTile) {
    __syncthreads();
    const int n = load_key_tile(a, rh, t0, Ks);
    __syncthreads();
    const int64_t c = t0 + lane;
    float s[kScoreQueriesPerWarp];
    logits(n, c, s);
    float sum = 0.0f;
    for (int qq = 0; qq < kScoreQueriesPerWarp; ++qq) {
      if (warp * kScoreQueriesPerWarp + qq >= a.nw) continue;
      sum += kSoftmax ? kmath::online_softmax_finish(st[qq], kmath::online_softmax_weight(st[qq], s[qq])) : s[qq];
    }
    part[warp * 32 + lane] = sum;
    __syncthreads();
    if (warp == 0 && lane < n) {
      float total = part[lane];
      for (int w = 1; w < kScoreWarps; ++w) total += part[w * 32 + lane];
      if (is_window_col(c)) total = kSoftmax ? 0.0f : -INFINITY;
      a.scores[rh * a.total + c] = total;
    }
  }
}

__global__ void pool1d_kernel(const float* in, float* out, int64_t rows, int64_t n, int half, bool is_max, int kernel) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < rows * n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = e / n, i = e % n;
    const float* s = in + r * n;
    const int64_t lo = i - half < 0 ? 0 : i - half, hi = i + half > n - 1 ? n - 1 : i + half;
    float v = is_max ? -INFINITY : 0.0f;
    for (int64_t j = lo; j <= hi; ++j) v = is_max ? fmaxf(v, s[j]) : v + s[j];
    out[e] = is_max ? v : v / static_cast<float>(kernel);
  }
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
  __shared__ int32_t wins[kMaxWindowCols];
  __shared__ kmath::RadixSelect sel;
  const float* s = pooled + static_cast<int64_t>(blockIdx.x) * n;
  int32_t* out = kept + static_cast<int64_t>(blockIdx.x) * (k + nw);
  for (int i = threadIdx.x; i < nw; i += blockDim.x) wins[i] = win_cols[i];
  __syncthreads();
  block_radix_select(s, n, k, [&](int64_t c) { return !in_sorted(wins, nw, c); }, hist, &sel);
  const uint32_t T = sel.prefix;
  const int64_t take_eq = sel.remaining;

  int64_t eq_seen = 0, written = 0;  // identical in every thread (block aggregates)
  for (int64_t base = 0; base < n; base += blockDim.x) {
    const int64_t c = base + threadIdx.x;
    bool win = false, gt = false, eq = false;
    if (c < n) {
      win = in_sorted(wins, nw, c);
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
    const int64_t start = segment_start(s);
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

void check_keys(const Tensor& t, const char* what) {
  check_cuda_f32(t, what);
  SKV_CHECK(t.ndim() == 4, "{}: expected [R, H, L, D], got {}", what, t.describe());
}

}  // namespace

void window_scores(const Tensor& q, const std::vector<int32_t>& win, const Tensor& hist_k, int64_t hist_len,
                   const Tensor& cur_k, float scale, WindowScore mode, Tensor& scores) {
  check_keys(q, "window_scores q");
  check_keys(cur_k, "window_scores cur_k");
  check_cuda_f32(scores, "window_scores scores");
  const int64_t R = q.dim(0), H = q.dim(1), Lc = q.dim(2), D = q.dim(3);
  const int64_t cap = hist_len > 0 ? hist_k.dim(2) : 0, total = hist_len + Lc;
  if (hist_len > 0) {
    check_keys(hist_k, "window_scores hist_k");
    SKV_CHECK(hist_k.dim(0) == R && hist_k.dim(1) == H && hist_k.dim(3) == D && hist_len <= cap,
              "window_scores: store {} with {} tokens for q {}", hist_k.describe(), hist_len, q.describe());
  }
  SKV_CHECK(cur_k.dim(0) == R && cur_k.dim(1) == H && cur_k.dim(2) == Lc && cur_k.dim(3) == D,
            "window_scores: cur_k {} for q {}", cur_k.describe(), q.describe());
  SKV_CHECK(scores.numel() == R * H * total, "window_scores: scores {} for {} x {} x {}", scores.describe(), R, H, total);
  SKV_CHECK(static_cast<int>(win.size()) <= kScaleKVWindow && std::is_sorted(win.begin(), win.end()) &&
                std::adjacent_find(win.begin(), win.end()) == win.end(),
            "window_scores: the window must be at most {} ascending distinct query indices", kScaleKVWindow);
  for (int32_t w : win) SKV_CHECK(w >= 0 && w < Lc, "window_scores: window query {} outside [0, {})", w, Lc);
  if (R * H * total == 0) return;
  ScoreArgs a{};
  a.q = fptr(q);
  a.hist_k = hist_len > 0 ? fptr(hist_k) : nullptr;
  a.cur_k = fptr(cur_k);
  a.scores = fptr(scores);
  a.hist_len = hist_len;
  a.cap = cap;
  a.Lc = Lc;
  a.D = D;
  a.total = total;
  a.scale = scale;
  a.nw = static_cast<int>(win.size());
  std::copy(win.begin(), win.end(), a.win);
  const size_t smem = static_cast<size_t>(kScaleKVWindow * D + kScoreTile * (D + 1) + kScoreWarps * 32) * sizeof(float);
  SKV_CHECK(D <= kmath::kAttnMaxHeadDim, "window_scores: head_dim {} above {}", D, kmath::kAttnMaxHeadDim);
  OpTimer timer("kv_select", 2.0 * R * H * total * D * win.size(), static_cast<double>(R * H * total * D * 4));
  const unsigned grid = static_cast<unsigned>(R * H);
  if (mode == WindowScore::Raw) {
    prepare_smem(reinterpret_cast<const void*>(window_scores_kernel<false>), smem, "window_scores");
    window_scores_kernel<false><<<grid, kScoreWarps * 32, smem, stream()>>>(a);
  } else {
    prepare_smem(reinterpret_cast<const void*>(window_scores_kernel<true>), smem, "window_scores");
    window_scores_kernel<true><<<grid, kScoreWarps * 32, smem, stream()>>>(a);
  }
  SKV_CUDA_LAUNCHED("window_scores");
}

void pool1d(const Tensor& in, int kernel, WindowPool mode, Tensor& out) {
  check_cuda_f32(in, "pool1d in");
  check_cuda_f32(out, "pool1d out");
  SKV_CHECK(out.numel() == in.numel() && kernel >= 1 && kernel % 2 == 1, "pool1d: in {} out {} kernel {} (odd)",
            in.describe(), out.describe(), kernel);
  const int64_t n = in.ndim() == 0 ? 1 : in.dim(-1), rows = n == 0 ? 0 : in.numel() / n;
  if (rows * n == 0) return;
  OpTimer timer("kv_select", 0, 2.0 * in.nbytes());
  pool1d_kernel<<<grid1d(rows * n), kmath::kEltThreads, 0, stream()>>>(fptr(in), fptr(out), rows, n, kernel / 2,
                                                                        mode == WindowPool::Max, kernel);
  SKV_CUDA_LAUNCHED("pool1d");
}

void topk_keep(const Tensor& pooled, const std::vector<int32_t>& win_cols, int64_t k, Tensor& kept) {
  check_cuda_f32(pooled, "topk_keep pooled");
  check_cuda_tensor(kept, "topk_keep kept");
  SKV_CHECK(pooled.ndim() == 3, "topk_keep: pooled must be [R, H, n], got {}", pooled.describe());
  const int64_t RH = pooled.dim(0) * pooled.dim(1), n = pooled.dim(2), nw = static_cast<int64_t>(win_cols.size());
  SKV_CHECK(nw <= kMaxWindowCols, "topk_keep: {} window columns, at most {}", nw, kMaxWindowCols);
  SKV_CHECK(std::is_sorted(win_cols.begin(), win_cols.end()) &&
                std::adjacent_find(win_cols.begin(), win_cols.end()) == win_cols.end() &&
                (nw == 0 || (win_cols.front() >= 0 && win_cols.back() < n)),
            "topk_keep: window columns must be ascending and distinct in [0, {})", n);
  SKV_CHECK(k >= 0 && k <= n - nw, "topk_keep: k = {} but only {} candidate columns", k, n - nw);
  SKV_CHECK(n <= 0x7fffffff && RH <= 0x7fffffff, "topk_keep: {} too large", pooled.describe());
  SKV_CHECK(kept.dtype() == DType::I32 && kept.numel() == RH * (k + nw), "topk_keep: kept {} for {} x {}",
            kept.describe(), RH, k + nw);
  if (RH == 0 || k + nw == 0) return;
  Tensor d_win = upload_vector(win_cols.empty() ? std::vector<int32_t>{0} : win_cols, DType::I32);
  OpTimer timer("kv_select", 0, static_cast<double>(pooled.nbytes()) * 5);
  topk_keep_kernel<<<static_cast<unsigned>(RH), kTopkThreads, 0, stream()>>>(fptr(pooled), n, d_win.data<int32_t>(),
                                                                            static_cast<int>(nw), k, kept.data<int32_t>());
  SKV_CUDA_LAUNCHED("topk_keep");
}

Tensor select(const Tensor& q, const std::vector<int32_t>& win, const Tensor& hist_k, int64_t hist_len,
              const Tensor& cur_k, float scale, WindowScore score, WindowPool pool, int kernel, int64_t budget) {
  const int64_t R = q.dim(0), H = q.dim(1), total = hist_len + cur_k.dim(2), nw = static_cast<int64_t>(win.size());
  SKV_CHECK(budget >= nw && budget <= total, "kv select: budget {} must lie in [{} (the window), {} (all tokens)]", budget,
            nw, total);
  Allocator* al = &ctx().alloc;
  Tensor scores = Tensor::empty({R, H, total}, DType::F32, MemCategory::Workspace, al, Device::CUDA);
  window_scores(q, win, hist_k, hist_len, cur_k, scale, score, scores);
  Tensor pooled = Tensor::empty({R, H, total}, DType::F32, MemCategory::Workspace, al, Device::CUDA);
  pool1d(scores, kernel, pool, pooled);
  std::vector<int32_t> cols(win);
  for (int32_t& c : cols) c += static_cast<int32_t>(hist_len);
  Tensor kept = Tensor::empty({R, H, budget}, DType::I32, MemCategory::Workspace, al, Device::CUDA);
  topk_keep(pooled, cols, budget - nw, kept);
  return kept;
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
