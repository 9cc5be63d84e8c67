#include "launcher/context.h"

#include "runtime/check.h"

namespace skv {

void add_context_options(CLI::App* cmd, ContextArgs& a) {
  cmd->add_option("--device", a.device, "cpu or cuda")->capture_default_str();
  cmd->add_option("--tp", a.tp, "Tensor-parallel size (ranks per model replica)")->capture_default_str();
  cmd->add_option("--weight-dtype", a.weight_dtype,
                  "Linear-layer weights on the device: f32 (parity with the goldens), bf16 or f16 (FP32 accumulation)")
      ->capture_default_str();
}

RunContext make_context(const ContextArgs& a) {
  SKV_CHECK(a.tp >= 1, "--tp {} must be >= 1", a.tp);
  SKV_CHECK(a.tp == 1, "--tp {} needs {} ranks; this build runs one process (start it under mpirun)", a.tp, a.tp);
  RunContext c;
  c.backend = &backend_for(a.device);
  c.backend->set_weight_dtype(dtype_from_cli(a.weight_dtype));
  c.tp = make_local_communicator();
  return c;
}

}  // namespace skv
