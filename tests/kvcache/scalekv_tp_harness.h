// scalekv_tp_harness.h - drives a ScaleKV policy over a schedule on a slice of the heads of recorded
// per-layer K/V/queries, so tests can split the heads over ranks (threads or MPI) and compare what each
// rank keeps with a one-rank run, head for head.
#pragma once

#include <map>
#include <tuple>
#include <vector>

#include "kvcache/multiscale_cache.h"
#include "kvcache/planner.h"
#include "kvcache/scalekv.h"
#include "parallel/communicator.h"
#include "test_util.h"

namespace skv::test {

// One layer's K/V and queries at one scale for every head: the "model" of the TP split test.
struct LayerData {
  Tensor k, v, q_raw, q_attn;  // [R, H, l, hd]
};

inline Tensor head_slice(const Tensor& t, int h0, int h1) {
  const int64_t R = t.dim(0), H = t.dim(1), L = t.dim(2), D = t.dim(3);
  Tensor o = Tensor::empty({R, h1 - h0, L, D});
  for (int64_t r = 0; r < R; ++r)
    for (int h = h0; h < h1; ++h)
      std::copy_n(t.f32() + ((r * H + h) * L) * D, L * D, o.f32() + ((r * (h1 - h0) + (h - h0)) * L) * D);
  return o;
}

// Runs the policy over a schedule on heads [h0, h1) of the data; returns kept positions per (scale, layer, row, global head).
inline std::map<std::tuple<int, int, int, int>, std::vector<int32_t>> run_heads(
    const std::vector<std::vector<LayerData>>& data, const Schedule& s, int depth, int R, int h0, int h1, int hd,
    ScaleKVPolicy& pol, Communicator& comm) {
  std::map<std::tuple<int, int, int, int>, std::vector<int32_t>> kept;
  pol.set_communicator(&comm);
  pol.begin_request();
  const KVPlan plan = plan_kv(pol, s, depth, 1);
  MultiScaleKVCache cache(cpu_backend(), R, h1 - h0, hd, depth, plan.pool_tokens);
  cache.track_positions(true);
  for (int si = 0; si + 1 < s.num_scales(); ++si) {
    pol.begin_scale(si);
    cache.begin_scale(s.tokens(si), s.offset(si));
    for (int l = 0; l < depth; ++l) {
      const LayerData& d = data[si][l];
      Tensor k = head_slice(d.k, h0, h1), v = head_slice(d.v, h0, h1);
      std::copy_n(k.f32(), k.numel(), cache.cur_k().f32());
      std::copy_n(v.f32(), v.numel(), cache.cur_v().f32());
      Tensor qr = head_slice(d.q_raw, h0, h1), qa = head_slice(d.q_attn, h0, h1);
      cache.update(l, si, pol, s, &qr, &qa, 0.3f, h0);
      const int64_t n = cache.len(l);
      for (int r = 0; r < R; ++r)
        for (int h = 0; h < h1 - h0; ++h) {
          const int32_t* p = cache.layer(l).pos.data() + (r * (h1 - h0) + h) * n;
          kept[{si, l, r, h0 + h}] = std::vector<int32_t>(p, p + n);
        }
    }
    cache.end_scale();
    pol.end_scale(si);
  }
  return kept;
}


// Random per-(scale, layer) data whose query scale differs by layer, so the ASI separates layers.
inline std::vector<std::vector<LayerData>> make_layer_data(const Schedule& s, int depth, int R, int H, int hd) {
  std::vector<std::vector<LayerData>> data(s.num_scales(), std::vector<LayerData>(depth));
  uint32_t seed = 100;
  for (int si = 0; si < s.num_scales(); ++si)
    for (int l = 0; l < depth; ++l) {
      const int64_t n = s.tokens(si);
      const float qs = 0.2f + 0.5f * static_cast<float>((l * 7) % depth);
      data[si][l] = {randn({R, H, n, hd}, seed++), randn({R, H, n, hd}, seed++), randn({R, H, n, hd}, seed++),
                     randn({R, H, n, hd}, seed++, qs)};
    }
  return data;
}

}  // namespace skv::test
