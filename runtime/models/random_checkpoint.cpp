#include "runtime/models/random_checkpoint.h"

#include "parallel/communicator.h"
#include "runtime/models/var_model.h"
#include "runtime/models/vqvae.h"

namespace skv {

void write_random_var_checkpoint(const VarConfig& cfg, const std::string& var_path, const std::string& vae_path,
                                 uint64_t seed) {
  auto comm = make_local_communicator();
  std::vector<std::pair<std::string, Tensor>> rec;
  {
    WeightLoader wl(seed, cpu_backend());
    wl.record = &rec;
    VarModel m(cfg, wl, *comm);
  }
  write_safetensors(var_path, rec, {{"format", "pt"}, {"source", "scalekv random checkpoint"}});
  rec.clear();
  {
    WeightLoader wl(seed + 1, cpu_backend());
    wl.record = &rec;
    VQVAE v(cfg, wl);
  }
  write_safetensors(vae_path, rec, {{"format", "pt"}, {"source", "scalekv random checkpoint"}});
}

}  // namespace skv
