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

void adaln_ffn(Backend& be, Communicator& comm, Tensor& x, const Tensor& ada, const Tensor& fc1_w,
               const Tensor& fc1_b, const Tensor& fc2_w, const Tensor& fc2_b, int64_t local_ffn, float eps) {
  const int64_t R = x.dim(0), l = x.dim(1), C = x.dim(2);
  Tensor h = be.empty({R, l, C});
  be.layer_norm(x, nullptr, nullptr, eps, h);
  be.modulate(h, ada_slot(be, ada, 3), ada_slot(be, ada, 5), h);
  Tensor f = be.empty({R, l, local_ffn});
  be.linear(h, fc1_w, &fc1_b, f);
  be.gelu_tanh(f);
  Tensor y = be.empty({R, l, C});
  be.linear(f, fc2_w, nullptr, y);
  tp_all_reduce(comm, y);
  be.add(y, fc2_b, y);
  const Tensor gamma2 = ada_slot(be, ada, 1);
  be.add_gated(x, y, &gamma2);
}

}  // namespace skv
