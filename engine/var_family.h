// var_family.h - the class-conditional VAR family behind the engine: requests of class labels, one
// VarGeneration each, stepped together as one packed forward pass (VarGeneration::step).
#pragma once

#include <map>

#include "engine/engine.h"
#include "runtime/models/var_generate.h"

namespace skv {

class VarFamily final : public EngineFamily {
 public:
  VarFamily(const VarModel& model, const VQVAE& vae) : model_(model), vae_(vae) {}
  std::string name() const override { return "var"; }
  void check(const EngineRequest& r) const override;
  std::unique_ptr<KVPolicy> make_policy(const EngineRequest& r) const override;
  std::vector<StepDemand> demand(const EngineRequest& r, const KVPolicy& policy) const override;
  std::unique_ptr<Generation> start(const EngineRequest& r, KVPolicy* policy, KVPagePool& pages, int decode_begin,
                                    int decode_end) override;
  void step(const std::vector<Generation*>& batch) override;
  int64_t image_cells(const EngineRequest& r) const override;
  DecodeProbe probe_decode() override;
  std::vector<std::vector<uint8_t>> rgb8(const Tensor& images) const override { return images_to_rgb8(images); }
  // The VarRequest the engine runs for `r` (the model's CFG and sampling where r leaves them unset).
  VarRequest var_request(const EngineRequest& r) const;
  // The engine request of a VarRequest (full cache; set kv for another policy).
  static EngineRequest engine_request(int64_t id, const VarRequest& v);
  // Local hooks for request `id` on this rank (observer, teacher tokens, progress; nothing else of `hooks`
  // is used): verify-golden and calibration watch the engine's own run through them.
  void attach(int64_t id, const VarRunOptions& hooks) { hooks_[id] = hooks; }

 private:
  const VarModel& model_;
  const VQVAE& vae_;
  std::map<int64_t, VarRunOptions> hooks_;
};

}  // namespace skv
