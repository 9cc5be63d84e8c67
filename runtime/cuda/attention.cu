// attention.cu - one kernel for a scale's queries over [compressed history + current scale]: the
// KVSegment list of runtime/backend.h (each segment its own capacity, length, or per-row lengths),
// online softmax (flash-style), so no Lq x L score matrix ever exists in memory.
//
// Work split (constants in kernel_math.h): a block owns kAttnQueriesPerBlock consecutive queries of
// one (row, head); warp w owns kAttnQueriesPerWarp of them. Keys and values stream through shared
// memory in tiles of 32 tokens. Per tile, lane j computes the scores of key j for its warp's queries
// (the K tile's rows are padded to D + 1 floats, so the 32 lanes hit 32 banks), the warp folds the
// tile into each query's running softmax (kmath::online_softmax_*), and for the weighted sum of V
// lane j owns head-dim slots j, j + 32, ... (NC = ceil(D / 32) of them, a template parameter).
// Everything accumulates in FP32; scores are scale * (q . k) as in the CPU backend's SGEMM.
//
// A second kernel uses tensor cores (WMMA, bf16 inputs, FP32 accumulation) when the backend runs with
// half-precision weights (--weight-dtype bf16/f16) and head_dim is a multiple of 16 up to 128: Q (times
// the scale), K and V are rounded to bf16 as they enter shared memory, scores and the output
// accumulate in FP32, the softmax state stays FP32. Same segments, same online softmax functions; a
// block owns 64 queries (16 per warp), keys come in tiles of 64. F32 runs (parity) never take it.
//
// Varlen (Backend::attention_varlen: every request of a packed step in one launch): the same two kernels
// over a 1-D grid of every job's blocks; a block finds its job by binary search in the jobs' first-block
// offsets (locate_block) and then runs exactly the one-job code, so a job's output equals its own launch.
#include <mma.h>

#include <algorithm>
#include <vector>

#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_device.h"
#include "runtime/cuda/ops.h"

namespace skv::cuda {

namespace {

using kmath::kAttnKeyTile;
using kmath::kAttnQueriesPerBlock;
using kmath::kAttnQueriesPerWarp;
using kmath::kAttnWarps;

struct AttnSeg {
  const float* k;
  const float* v;
  int64_t cap;
  int64_t len;
  const int64_t* row_len;  // device [R], or null: `len` for every row
};

struct AttnArgs {
  const float* q;  // [R, H, Lq, D]
  float* out;      // [R, Lq, H, D]
  int64_t H, Lq, D;
  float scale;
  int nseg;
  const AttnSeg* seg;  // device table [nseg]
};

// The jobs of a varlen launch (device tables), or n == 0: one job, the kernel's own args, a 2-D grid
// (x: query blocks, y: row x head).
struct AttnVarlen {
  const AttnArgs* jobs;   // [n]
  const int64_t* block0;  // [n] the first block of each job, ascending (jobs without blocks left out)
  int n;
};

// This block's job (a is replaced by it for a varlen launch), its (row, head) and its query block.
__device__ inline void locate_block(AttnArgs& a, const AttnVarlen& v, int64_t queries_per_block, int64_t& rh,
                                    int64_t& qb) {
  if (v.n == 0) {
    rh = blockIdx.y;
    qb = blockIdx.x;
    return;
  }
  const int64_t b = blockIdx.x;
  int lo = 0, hi = v.n - 1;  // the last job whose first block is <= b
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (v.block0[mid] <= b)
      lo = mid;
    else
      hi = mid - 1;
  }
  a = v.jobs[lo];
  const int64_t local = b - v.block0[lo], nqb = (a.Lq + queries_per_block - 1) / queries_per_block;
  rh = local / nqb;
  qb = local % nqb;
}

template <int NC>
__global__ void __launch_bounds__(kAttnWarps * 32) attention_kernel(const AttnArgs a0, const AttnVarlen v) {
  extern __shared__ float smem[];
  AttnArgs a = a0;
  int64_t rh, qb;
  locate_block(a, v, kAttnQueriesPerBlock, rh, qb);
  const int64_t D = a.D, KS = D + 1;
  float* Ks = smem;                    // [kAttnKeyTile][D + 1]
  float* Vs = Ks + kAttnKeyTile * KS;  // [kAttnKeyTile][D]
  float* Qs = Vs + kAttnKeyTile * D;   // [kAttnQueriesPerBlock][D]
  const int64_t r = rh / a.H, h = rh % a.H;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t q0 = qb * kAttnQueriesPerBlock;

  for (int64_t i = threadIdx.x; i < kAttnQueriesPerBlock * D; i += blockDim.x) {
    const int64_t qi = q0 + i / D;
    Qs[i] = qi < a.Lq ? a.q[(rh * a.Lq + qi) * D + i % D] : 0.0f;
  }
  kmath::OnlineSoftmax st[kAttnQueriesPerWarp];
  float acc[kAttnQueriesPerWarp][NC];
#pragma unroll
  for (int qq = 0; qq < kAttnQueriesPerWarp; ++qq) {
    st[qq] = kmath::online_softmax_init();
#pragma unroll
    for (int c = 0; c < NC; ++c) acc[qq][c] = 0.0f;
  }
  const float* Qw = Qs + warp * kAttnQueriesPerWarp * D;  // this warp's queries

  for (int s = 0; s < a.nseg; ++s) {
    const AttnSeg sg = a.seg[s];
    const int64_t len = sg.row_len ? sg.row_len[r] : sg.len;
    const float* K = sg.k + rh * sg.cap * D;
    const float* V = sg.v + rh * sg.cap * D;
    for (int64_t t0 = 0; t0 < len; t0 += kAttnKeyTile) {
      const int n = static_cast<int>(len - t0 < kAttnKeyTile ? len - t0 : kAttnKeyTile);
      __syncthreads();  // every warp is done with the previous tile (and Qs is written, on the first)
      for (int64_t i = threadIdx.x; i < kAttnKeyTile * D; i += blockDim.x) {
        const int64_t j = i / D, d = i % D;
        const bool ok = j < n;
        Ks[j * KS + d] = ok ? K[(t0 + j) * D + d] : 0.0f;
        Vs[j * D + d] = ok ? V[(t0 + j) * D + d] : 0.0f;
      }
      __syncthreads();

      // Scores of key `lane` for the warp's queries.
      float p[kAttnQueriesPerWarp];
#pragma unroll
      for (int qq = 0; qq < kAttnQueriesPerWarp; ++qq) p[qq] = 0.0f;
      const float* kr = Ks + lane * KS;
#pragma unroll 4
      for (int64_t d = 0; d < D; ++d) {
        const float kd = kr[d];
#pragma unroll
        for (int qq = 0; qq < kAttnQueriesPerWarp; ++qq) p[qq] += Qw[qq * D + d] * kd;
      }
      // Fold the tile into each query's running softmax; p becomes the weight of key `lane`.
#pragma unroll
      for (int qq = 0; qq < kAttnQueriesPerWarp; ++qq) {
        const float score = lane < n ? a.scale * p[qq] : -INFINITY;
        const float corr = kmath::online_softmax_enter(st[qq], warp_max(score));
        p[qq] = kmath::online_softmax_weight(st[qq], score);
        st[qq].l += warp_sum(p[qq]);
#pragma unroll
        for (int c = 0; c < NC; ++c) acc[qq][c] *= corr;
      }
      // acc += sum_j p_j v_j, lane owning head-dim slots lane + 32 c.
      for (int j = 0; j < n; ++j) {
        float pj[kAttnQueriesPerWarp];
#pragma unroll
        for (int qq = 0; qq < kAttnQueriesPerWarp; ++qq) pj[qq] = __shfl_sync(0xffffffffu, p[qq], j);
#pragma unroll
        for (int c = 0; c < NC; ++c) {
          const int64_t d = lane + 32 * c;
          const float vd = d < D ? Vs[j * D + d] : 0.0f;
#pragma unroll
          for (int qq = 0; qq < kAttnQueriesPerWarp; ++qq) acc[qq][c] += pj[qq] * vd;
        }
      }
    }
  }

#pragma unroll
  for (int qq = 0; qq < kAttnQueriesPerWarp; ++qq) {
    const int64_t qi = q0 + warp * kAttnQueriesPerWarp + qq;
    if (qi >= a.Lq) continue;
    float* o = a.out + ((r * a.Lq + qi) * a.H + h) * D;
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const int64_t d = lane + 32 * c;
      if (d < D) o[d] = kmath::online_softmax_finish(st[qq], acc[qq][c]);
    }
  }
}

// ---- tensor-core kernel --------------------------------------------------------------------------------
using kmath::kTcKeys;
using kmath::kTcQueries;
using kmath::kTcWarps;
static_assert(kTcQueries == 16 * kTcWarps, "one 16-row WMMA tile of queries per warp");

__global__ void __launch_bounds__(kTcWarps * 32) attention_tc_kernel(const AttnArgs a0, const AttnVarlen v) {
  namespace wmma = nvcuda::wmma;
  AttnArgs a = a0;
  int64_t rh, qb;
  locate_block(a, v, kTcQueries, rh, qb);
  using bf16 = __nv_bfloat16;
  extern __shared__ __align__(32) unsigned char tc_smem[];
  const int64_t D = a.D;
  const kmath::TcAttnLayout t = kmath::tc_attn_layout(D);
  bf16* Qs = reinterpret_cast<bf16*>(tc_smem + t.q);  // [64][ldh], pre-scaled
  bf16* Ks = reinterpret_cast<bf16*>(tc_smem + t.k);  // [64][ldh]
  bf16* Vs = reinterpret_cast<bf16*>(tc_smem + t.v);  // [64][ldh]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // this warp's scores, probabilities and output rows
  float* Sw = reinterpret_cast<float*>(tc_smem + t.s + warp * t.s_warp);
  bf16* Pw = reinterpret_cast<bf16*>(tc_smem + t.p + warp * t.p_warp);
  float* Ow = reinterpret_cast<float*>(tc_smem + t.o + warp * t.o_warp);
  const bf16* Qw = Qs + warp * 16 * t.ldh;
  const int64_t r = rh / a.H, h = rh % a.H;
  const int64_t q0 = qb * kTcQueries;

  for (int64_t i = threadIdx.x; i < kTcQueries * D; i += blockDim.x) {
    const int64_t qi = i / D, d = i % D, q = q0 + qi;
    Qs[qi * t.ldh + d] = __float2bfloat16(q < a.Lq ? a.scale * a.q[(rh * a.Lq + q) * D + d] : 0.0f);
  }
  for (int64_t i = lane; i < 16 * t.ldo; i += 32) Ow[i] = 0.0f;
  // Lanes 2i and 2i+1 own query row i of the warp: columns (or head-dim slots) of their half.
  const int row = lane / 2, half = lane % 2;
  kmath::OnlineSoftmax st = kmath::online_softmax_init();

  for (int s = 0; s < a.nseg; ++s) {
    const AttnSeg sg = a.seg[s];
    const int64_t len = sg.row_len ? sg.row_len[r] : sg.len;
    const float* K = sg.k + rh * sg.cap * D;
    const float* V = sg.v + rh * sg.cap * D;
    for (int64_t t0 = 0; t0 < len; t0 += kTcKeys) {
      const int n = static_cast<int>(len - t0 < kTcKeys ? len - t0 : kTcKeys);
      __syncthreads();  // all warps are done with the previous K/V tile (and Q is written)
      for (int64_t i = threadIdx.x; i < kTcKeys * D; i += blockDim.x) {
        const int64_t j = i / D, d = i % D;
        const bool ok = j < n;
        Ks[j * t.ldh + d] = __float2bfloat16(ok ? K[(t0 + j) * D + d] : 0.0f);
        Vs[j * t.ldh + d] = __float2bfloat16(ok ? V[(t0 + j) * D + d] : 0.0f);
      }
      __syncthreads();

      // S[16][64] = Q_w . K^T (K tile row-major [key][d] is K^T column-major).
      for (int jb = 0; jb < kTcKeys / 16; ++jb) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int64_t d0 = 0; d0 < D; d0 += 16) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> qa;
          wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> kb;
          wmma::load_matrix_sync(qa, Qw + d0, static_cast<unsigned>(t.ldh));
          wmma::load_matrix_sync(kb, Ks + jb * 16 * t.ldh + d0, static_cast<unsigned>(t.ldh));
          wmma::mma_sync(acc, qa, kb, acc);
        }
        wmma::store_matrix_sync(Sw + jb * 16, acc, static_cast<unsigned>(t.lds), wmma::mem_row_major);
      }
      __syncwarp();

      // Online softmax of row `row` over the tile's n valid columns; P = weights in bf16.
      const float* srow = Sw + row * t.lds;
      bf16* prow = Pw + row * t.ldp;
      float mx = -INFINITY;
      for (int c = half * 32; c < half * 32 + 32; ++c)
        if (c < n) mx = fmaxf(mx, srow[c]);
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      const float corr = kmath::online_softmax_enter(st, mx);
      float sum = 0.0f;
      for (int c = half * 32; c < half * 32 + 32; ++c) {
        const float p = c < n ? kmath::online_softmax_weight(st, srow[c]) : 0.0f;
        prow[c] = __float2bfloat16(p);
        sum += p;
      }
      st.l += sum + __shfl_xor_sync(0xffffffffu, sum, 1);
      float* orow = Ow + row * t.ldo;
      for (int64_t d = half * (D / 2); d < (half + 1) * (D / 2); ++d) orow[d] *= corr;
      __syncwarp();

      // O[16][D] += P . V
      for (int64_t d0 = 0; d0 < D; d0 += 16) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> o;
        wmma::load_matrix_sync(o, Ow + d0, static_cast<unsigned>(t.ldo), wmma::mem_row_major);
        for (int jb = 0; jb < kTcKeys / 16; ++jb) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> pa;
          wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> vb;
          wmma::load_matrix_sync(pa, Pw + jb * 16, static_cast<unsigned>(t.ldp));
          wmma::load_matrix_sync(vb, Vs + jb * 16 * t.ldh + d0, static_cast<unsigned>(t.ldh));
          wmma::mma_sync(o, pa, vb, o);
        }
        wmma::store_matrix_sync(Ow + d0, o, static_cast<unsigned>(t.ldo), wmma::mem_row_major);
      }
      __syncwarp();
    }
  }

  const int64_t q = q0 + warp * 16 + row;
  if (q < a.Lq) {
    float* o = a.out + ((r * a.Lq + q) * a.H + h) * D;
    for (int64_t d = half * (D / 2); d < (half + 1) * (D / 2); ++d)
      o[d] = kmath::online_softmax_finish(st, Ow[row * t.ldo + d]);
  }
}

// grid: (query blocks, R x H) for one job (v.n == 0), or (every job's blocks, 1) for a varlen launch.
void launch_tc(const AttnArgs& a, const AttnVarlen& v, dim3 grid) {
  const kmath::TcAttnLayout t = kmath::tc_attn_layout(a.D);
  prepare_smem(reinterpret_cast<const void*>(attention_tc_kernel), static_cast<size_t>(t.bytes), "attention (tensor cores)");
  attention_tc_kernel<<<grid, kTcWarps * 32, static_cast<size_t>(t.bytes), stream()>>>(a, v);
  SKV_CUDA_LAUNCHED("attention (tensor cores)");
}

template <int NC>
void launch(const AttnArgs& a, const AttnVarlen& v, dim3 grid) {
  const size_t smem = static_cast<size_t>(kmath::attn_smem_floats(a.D)) * sizeof(float);
  prepare_smem(reinterpret_cast<const void*>(attention_kernel<NC>), smem, "attention");
  attention_kernel<NC><<<grid, kAttnWarps * 32, smem, stream()>>>(a, v);
  SKV_CUDA_LAUNCHED("attention");
}

// The FP32 kernel for head_dim D, or the tensor-core one.
void launch_any(const AttnArgs& a, const AttnVarlen& v, dim3 grid, bool tensor_cores) {
  const int64_t D = a.D;
  if (tensor_cores) {
    SKV_CHECK(D % 16 == 0 && D <= 128, "attention: the tensor-core kernel needs head_dim % 16 == 0 and <= 128, got {}", D);
    launch_tc(a, v, grid);
    return;
  }
  switch ((D + 31) / 32) {
    case 1: launch<1>(a, v, grid); break;
    case 2: launch<2>(a, v, grid); break;
    case 3: launch<3>(a, v, grid); break;
    case 4: launch<4>(a, v, grid); break;
    case 5: launch<5>(a, v, grid); break;
    case 6: launch<6>(a, v, grid); break;
    case 7: launch<7>(a, v, grid); break;
    case 8: launch<8>(a, v, grid); break;
    default: SKV_FAIL("attention: head_dim {} unsupported", D);
  }
}

// One job's arguments, checked; its segments are appended to `table` from index *seg_first on (the caller
// sets a.seg once the table is on the device), per-row lengths uploaded into `row_lens`. Adds its key
// count to `keys`.
AttnArgs job_args(const Tensor& q, const std::vector<KVSegment>& segs, float scale, Tensor& out,
                  std::vector<AttnSeg>& table, std::vector<Tensor>& row_lens, double& keys, size_t* seg_first) {
  check_cuda_f32(q, "attention q");
  check_cuda_f32(out, "attention out");
  SKV_CHECK(q.ndim() == 4, "attention: q must be [rows, heads, tokens, head_dim], got {}", q.describe());
  const int64_t R = q.dim(0), H = q.dim(1), Lq = q.dim(2), D = q.dim(3);
  SKV_CHECK(out.numel() == R * Lq * H * D, "attention: out {} for q {}", out.describe(), q.describe());
  SKV_CHECK(D >= 1 && D <= kmath::kAttnMaxHeadDim, "attention: head_dim {} outside [1, {}]", D, kmath::kAttnMaxHeadDim);
  const char* limit = kmath::attention_launch_limit(R, H, D);
  SKV_CHECK(limit == nullptr, "attention: {} rows, {} heads, head_dim {}: {}", R, H, D, limit ? limit : "");
  AttnArgs a{};
  a.q = fptr(q);
  a.out = fptr(out);
  a.H = H;
  a.Lq = Lq;
  a.D = D;
  a.scale = scale;
  const size_t first = table.size();
  for (const auto& s : segs) {
    check_cuda_f32(*s.k, "attention k");
    check_cuda_f32(*s.v, "attention v");
    SKV_CHECK(s.k->ndim() == 4 && s.k->dim(0) == R && s.k->dim(1) == H && s.k->dim(3) == D && s.v->shape() == s.k->shape(),
              "attention: k {} v {} for q {}", s.k->describe(), s.v->describe(), q.describe());
    const int64_t cap = s.k->dim(2), start = s.start;
    SKV_CHECK(start >= 0 && start <= cap, "attention: segment start {} outside capacity {}", start, cap);
    // A segment starting at `start` is the same tensor seen `start` tokens later (rows keep stride cap).
    AttnSeg g{fptr(*s.k) + start * D, fptr(*s.v) + start * D, cap, s.len, nullptr};
    if (!s.row_len.empty()) {
      SKV_CHECK(static_cast<int64_t>(s.row_len.size()) == R, "attention: {} row lengths for {} rows", s.row_len.size(), R);
      for (int64_t l : s.row_len) {
        SKV_CHECK(l >= 0 && start + l <= cap, "attention: tokens [{}, {}) beyond capacity {}", start, start + l, cap);
        keys += static_cast<double>(l) * H;
      }
      row_lens.push_back(upload_vector(s.row_len, DType::I64));
      g.row_len = row_lens.back().data<int64_t>();
    } else {
      SKV_CHECK(s.len >= 0 && start + s.len <= cap, "attention: tokens [{}, {}) beyond capacity {}", start, start + s.len,
                cap);
      keys += static_cast<double>(s.len) * R * H;
      if (s.len == 0) continue;
    }
    table.push_back(g);
  }
  a.nseg = static_cast<int>(table.size() - first);
  *seg_first = first;
  return a;
}

}  // namespace

bool attention_uses_tensor_cores(int64_t head_dim, DType weight_dtype) {
  return weight_dtype != DType::F32 && head_dim % 16 == 0 && head_dim <= 128;
}

void attention(const Tensor& q, const std::vector<KVSegment>& segs, float scale, Tensor& out, bool tensor_cores) {
  std::vector<Tensor> row_lens;  // device copies, alive until the kernel is queued (frees are stream-ordered)
  std::vector<AttnSeg> table;
  double keys = 0;
  size_t first = 0;
  AttnArgs a = job_args(q, segs, scale, out, table, row_lens, keys, &first);
  Tensor d_table = upload_structs(table);
  a.seg = reinterpret_cast<const AttnSeg*>(d_table.raw());
  const int64_t R = q.dim(0), H = q.dim(1), Lq = q.dim(2), D = q.dim(3);
  if (R * H * Lq == 0) return;
  OpTimer timer("attention", 4.0 * keys * Lq * D, keys * D * 2 * sizeof(float) + static_cast<double>(q.nbytes() + out.nbytes()));
  const int64_t qpb = tensor_cores ? kTcQueries : kAttnQueriesPerBlock;
  launch_any(a, AttnVarlen{nullptr, nullptr, 0},
             dim3(static_cast<unsigned>(kmath::ceil_div(Lq, qpb)), static_cast<unsigned>(R * H)), tensor_cores);
}

void attention_varlen(const std::vector<AttentionJob>& jobs, float scale, bool tensor_cores) {
  std::vector<Tensor> row_lens;
  std::vector<AttnSeg> table;
  std::vector<AttnArgs> args;
  std::vector<int64_t> block0;
  std::vector<size_t> seg_first;
  double keys = 0, flops = 0, bytes = 0;
  int64_t blocks = 0, D = -1;
  const int64_t qpb = tensor_cores ? kTcQueries : kAttnQueriesPerBlock;
  for (const AttentionJob& j : jobs) {
    const double k0 = keys;
    size_t first = 0;
    AttnArgs a = job_args(*j.q, j.segs, scale, *j.out, table, row_lens, keys, &first);
    SKV_CHECK(D < 0 || a.D == D, "attention_varlen: head_dim {} beside {} (one model per call)", a.D, D);
    D = a.D;
    const int64_t R = j.q->dim(0), nb = R * a.H * kmath::ceil_div(a.Lq, qpb);
    flops += 4.0 * (keys - k0) * static_cast<double>(a.Lq * a.D);
    bytes += (keys - k0) * static_cast<double>(a.D) * 2 * sizeof(float) + static_cast<double>(j.q->nbytes() + j.out->nbytes());
    if (nb == 0) continue;  // no queries: nothing to write
    args.push_back(a);
    seg_first.push_back(first);
    block0.push_back(blocks);
    blocks += nb;
  }
  if (blocks == 0) return;
  SKV_CHECK(blocks < (int64_t{1} << 31), "attention_varlen: {} blocks are more than one launch takes", blocks);
  Tensor d_table = upload_structs(table);
  for (size_t i = 0; i < args.size(); ++i)
    args[i].seg = reinterpret_cast<const AttnSeg*>(d_table.raw()) + seg_first[i];
  Tensor d_args = upload_structs(args), d_block0 = upload_vector(block0, DType::I64);
  OpTimer timer("attention", flops, bytes);
  const AttnVarlen v{reinterpret_cast<const AttnArgs*>(d_args.raw()), d_block0.data<int64_t>(),
                     static_cast<int>(args.size())};
  launch_any(args[0], v, dim3(static_cast<unsigned>(blocks), 1u), tensor_cores);
}

AttnTiming measure_attention(int64_t R, int64_t H, int64_t Lq, int64_t kv_len, int64_t D, int repeats, bool tensor_cores) {
  Allocator& al = ctx().alloc;
  auto make = [&](int64_t L) {
    Tensor t = Tensor::empty({R, H, L, D}, DType::F32, MemCategory::Workspace, &al, Device::CUDA);
    SKV_CUDA_CHECK(cudaMemsetAsync(t.raw(), 0, t.nbytes(), stream()));
    return t;
  };
  Tensor q = make(Lq), k = make(kv_len), v = make(kv_len);
  Tensor out = Tensor::empty({R, Lq, H * D}, DType::F32, MemCategory::Workspace, &al, Device::CUDA);
  std::vector<KVSegment> segs{{&k, &v, kv_len, {}}};
  cudaEvent_t e0, e1;
  SKV_CUDA_CHECK(cudaEventCreate(&e0));
  SKV_CUDA_CHECK(cudaEventCreate(&e1));
  attention(q, segs, 0.125f, out, tensor_cores);  // warm-up
  std::vector<double> t;
  for (int i = 0; i < std::max(1, repeats); ++i) {
    SKV_CUDA_CHECK(cudaEventRecord(e0, stream()));
    attention(q, segs, 0.125f, out, tensor_cores);
    SKV_CUDA_CHECK(cudaEventRecord(e1, stream()));
    SKV_CUDA_CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    SKV_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(ms / 1e3);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(t.begin(), t.end());
  AttnTiming r;
  r.seconds = t[t.size() / 2];
  r.bytes = static_cast<double>(k.nbytes() + v.nbytes() + q.nbytes() + out.nbytes());
  r.flops = 4.0 * R * H * Lq * kv_len * D;
  return r;
}

}  // namespace skv::cuda
