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
  AttnSeg seg[kmath::kAttnMaxSegments];
};

template <int NC>
__global__ void __launch_bounds__(kAttnWarps * 32) attention_kernel(const AttnArgs a) {
  extern __shared__ float smem[];
  const int64_t D = a.D, KS = D + 1;
  float* Ks = smem;                    // [kAttnKeyTile][D + 1]
  float* Vs = Ks + kAttnKeyTile * KS;  // [kAttnKeyTile][D]
  float* Qs = Vs + kAttnKeyTile * D;   // [kAttnQueriesPerBlock][D]
  const int64_t rh = blockIdx.y, r = rh / a.H, h = rh % a.H;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kAttnQueriesPerBlock;

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

template <int NC>
void launch(const AttnArgs& a, int64_t RH) {
  const size_t smem = static_cast<size_t>(kmath::attn_smem_floats(a.D)) * sizeof(float);
  if (smem > 48 * 1024)
    SKV_CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<NC>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(smem)));
  const dim3 grid(static_cast<unsigned>(kmath::ceil_div(a.Lq, kAttnQueriesPerBlock)), static_cast<unsigned>(RH));
  attention_kernel<NC><<<grid, kAttnWarps * 32, smem, stream()>>>(a);
  SKV_CUDA_LAUNCHED("attention");
}

}  // namespace

void attention(const Tensor& q, const std::vector<KVSegment>& segs, float scale, Tensor& out) {
  check_cuda_f32(q, "attention q");
  check_cuda_f32(out, "attention out");
  SKV_CHECK(q.ndim() == 4, "attention: q must be [rows, heads, tokens, head_dim], got {}", q.describe());
  const int64_t R = q.dim(0), H = q.dim(1), Lq = q.dim(2), D = q.dim(3);
  SKV_CHECK(out.numel() == R * Lq * H * D, "attention: out {} for q {}", out.describe(), q.describe());
  SKV_CHECK(D >= 1 && D <= kmath::kAttnMaxHeadDim, "attention: head_dim {} outside [1, {}]", D, kmath::kAttnMaxHeadDim);
  SKV_CHECK(static_cast<int>(segs.size()) <= kmath::kAttnMaxSegments, "attention: {} segments, at most {}",
            segs.size(), kmath::kAttnMaxSegments);
  SKV_CHECK(R * H <= 65535, "attention: {} rows x {} heads exceed one launch (65535)", R, H);
  AttnArgs a{};
  a.q = fptr(q);
  a.out = fptr(out);
  a.H = H;
  a.Lq = Lq;
  a.D = D;
  a.scale = scale;
  std::vector<Tensor> row_lens;  // device copies, alive until the kernel is queued (frees are stream-ordered)
  double kv_bytes = 0, keys = 0;
  for (const auto& s : segs) {
    check_cuda_f32(*s.k, "attention k");
    check_cuda_f32(*s.v, "attention v");
    SKV_CHECK(s.k->ndim() == 4 && s.k->dim(0) == R && s.k->dim(1) == H && s.k->dim(3) == D && s.v->shape() == s.k->shape(),
              "attention: k {} v {} for q {}", s.k->describe(), s.v->describe(), q.describe());
    const int64_t cap = s.k->dim(2);
    AttnSeg g{fptr(*s.k), fptr(*s.v), cap, s.len, nullptr};
    if (!s.row_len.empty()) {
      SKV_CHECK(static_cast<int64_t>(s.row_len.size()) == R, "attention: {} row lengths for {} rows", s.row_len.size(), R);
      for (int64_t l : s.row_len) {
        SKV_CHECK(l >= 0 && l <= cap, "attention: length {} beyond capacity {}", l, cap);
        keys += static_cast<double>(l) * H;
      }
      row_lens.push_back(upload_vector(s.row_len, DType::I64));
      g.row_len = row_lens.back().data<int64_t>();
    } else {
      SKV_CHECK(s.len >= 0 && s.len <= cap, "attention: length {} beyond capacity {}", s.len, cap);
      keys += static_cast<double>(s.len) * R * H;
      if (s.len == 0) continue;
    }
    a.seg[a.nseg++] = g;
  }
  kv_bytes = keys * D * 2 * sizeof(float);
  if (R * H * Lq == 0) return;
  OpTimer timer("attention", 4.0 * keys * Lq * D, kv_bytes + static_cast<double>(q.nbytes() + out.nbytes()));
  switch ((D + 31) / 32) {
    case 1: launch<1>(a, R * H); break;
    case 2: launch<2>(a, R * H); break;
    case 3: launch<3>(a, R * H); break;
    case 4: launch<4>(a, R * H); break;
    case 5: launch<5>(a, R * H); break;
    case 6: launch<6>(a, R * H); break;
    case 7: launch<7>(a, R * H); break;
    case 8: launch<8>(a, R * H); break;
    default: SKV_FAIL("attention: head_dim {} unsupported", D);
  }
}

AttnTiming measure_attention(int64_t R, int64_t H, int64_t Lq, int64_t kv_len, int64_t D, int repeats) {
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
  attention(q, segs, 0.125f, out);  // warm-up
  std::vector<double> t;
  for (int i = 0; i < std::max(1, repeats); ++i) {
    SKV_CUDA_CHECK(cudaEventRecord(e0, stream()));
    attention(q, segs, 0.125f, out);
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
