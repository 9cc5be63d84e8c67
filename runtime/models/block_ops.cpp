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

void adaln_ffn_packed(Backend& be, Communicator& comm, Tensor& x, const std::vector<PackedPart>& parts,
                      const Tensor& fc1_w, const Tensor& fc1_b, const Tensor& fc2_w, const Tensor& fc2_b,
                      int64_t local_ffn, float eps) {
  const int64_t T = x.dim(0), C = x.dim(1);
  Tensor h = be.empty({T, C});
  be.layer_norm(x, nullptr, nullptr, eps, h);
  for (const PackedPart& p : parts) {
    Tensor hp = packed_view(h, p);
    be.modulate(hp, ada_slot(be, *p.ada, 3), ada_slot(be, *p.ada, 5), hp);
  }
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
