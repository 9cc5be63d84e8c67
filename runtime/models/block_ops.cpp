#include "runtime/models/block_ops.h"

#include "parallel/communicator.h"

namespace skv {

Tensor ada_slot(Backend& be, const Tensor& ada, int part) {
  const int64_t R = ada.dim(0), C = ada.dim(2);
  Tensor out = be.empty({R, C});
  for (int64_t r = 0; r < R; ++r) {
    Tensor src = ada[r][part];
    Tensor dst = out[r];
    be.copy(src, dst);
  }
  return out;
}

void tp_all_reduce(Communicator& comm, Tensor& t) {
  if (comm.size() == 1) return;
  comm.all_reduce_tensor(t);
}

Tensor packed_view(const Tensor& packed, const PackedPart& p) {
  return packed.slice0(p.begin, p.begin + p.rows * p.len).reshape({p.rows, p.len, packed.dim(-1)});
}

Tensor pack_parts(Backend& be, const std::vector<Tensor>& xs, std::vector<PackedPart>& parts) {
  parts.clear();
  int64_t T = 0;
  for (const Tensor& x : xs) {
    parts.push_back(PackedPart{T, x.dim(0), x.dim(1), nullptr});
    T += x.dim(0) * x.dim(1);
  }
  const int64_t N = xs.at(0).dim(-1);
  if (xs.size() == 1) return xs[0].reshape({T, N});
  Tensor packed = be.empty({T, N});
  for (size_t i = 0; i < xs.size(); ++i) {
    Tensor dst = packed_view(packed, parts[i]);
    be.copy(xs[i], dst);
  }
  return packed;
}

Tensor adaln_norm(Backend& be, const Tensor& x, const std::vector<PackedPart>& parts, int scale_slot, int shift_slot,
                  float eps) {
  Tensor h = be.empty({x.dim(0), x.dim(1)});
  be.layer_norm(x, nullptr, nullptr, eps, h);
  for (const PackedPart& p : parts) {
    Tensor hp = packed_view(h, p);
    be.modulate(hp, ada_slot(be, *p.ada, scale_slot), ada_slot(be, *p.ada, shift_slot), hp);
  }
  return h;
}

void split_request_qkv(Backend& be, const Tensor& qkv, const Tensor& q_bias, const Tensor& v_bias,
                       const Tensor* q_head_scale, bool raw, MultiScaleKVCache& cache, Tensor& q, Tensor& q_raw) {
  const int64_t R = qkv.dim(0), l = qkv.dim(1), Hl = cache.heads(), hd = cache.head_dim();
  q = be.empty({R, Hl, l, hd});
  if (raw) {
    q_raw = be.empty({R, Hl, l, hd});
    Tensor kd = be.empty({R, Hl, l, hd}), vd = be.empty({R, Hl, l, hd});
    be.split_qkv(qkv, nullptr, nullptr, nullptr, q_raw, kd, vd);
  }
  be.split_qkv(qkv, &q_bias, nullptr, &v_bias, q, cache.cur_k(), cache.cur_v());
  if (q_head_scale) {
    be.l2norm_heads(q, q_head_scale);
    be.l2norm_heads(cache.cur_k(), nullptr);
  }
}

void adaln_ffn_packed(Backend& be, Communicator& comm, Tensor& x, const std::vector<PackedPart>& parts,
                      const Tensor& fc1_w, const Tensor& fc1_b, const Tensor& fc2_w, const Tensor& fc2_b,
                      int64_t local_ffn, float eps) {
  const int64_t T = x.dim(0), C = x.dim(1);
  const Tensor h = adaln_norm(be, x, parts, 3, 5, eps);
  Tensor f = be.empty({T, local_ffn});
  be.linear(h, fc1_w, &fc1_b, f);
  be.gelu_tanh(f);
  Tensor y = be.empty({T, C});
  be.linear(f, fc2_w, nullptr, y);
  tp_all_reduce(comm, y);  // one reduction for every request of the step
  be.add(y, fc2_b, y);
  for (const PackedPart& p : parts) {
    Tensor xp = packed_view(x, p);
    const Tensor gamma2 = ada_slot(be, *p.ada, 1);
    be.add_gated(xp, packed_view(y, p), &gamma2);
  }
}

}  // namespace skv
