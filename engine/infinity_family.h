// infinity_family.h - the text-to-image Infinity family behind the engine: a request names prompts by
// their index in one table of prompt embeddings (InfinityText), or (with a resident T5 encoder, serve)
// gives them as text, encoded when the request starts on every rank of the group; it runs on the family's
// schedule or on its own aspect ratio at the family's resolution, with the sampling defaults it does not
// override; one InfinityGeneration each, stepped together as one packed pass (InfinityGeneration::step).
#pragma once

#include <map>

#include "engine/engine.h"
#include "runtime/models/infinity_generate.h"
#include "runtime/models/t5_encoder.h"

namespace skv {

class InfinityFamily final : public EngineFamily {
 public:
  // defaults: schedule, CFG, tau, CFG insertion layer and sampling of every request (a request's cfg,
  // top_k and top_p override them); text holds the embeddings of prompts [text_first, text_first + n).
  InfinityFamily(const InfinityModel& model, const BsqVae& vae, InfinityRequest defaults, InfinityText text,
                 int64_t text_first = 0);
  std::string name() const override { return "infinity"; }
  void check(const EngineRequest& r) const override;
  std::unique_ptr<KVPolicy> make_policy(const EngineRequest& r) const override;
  std::vector<StepDemand> demand(const EngineRequest& r, const KVPolicy& policy) const override;
  std::unique_ptr<Generation> start(const EngineRequest& r, KVPolicy* policy, KVPagePool& pages, int decode_begin,
                                    int decode_end) override;
  void step(const std::vector<Generation*>& batch) override;
  int64_t image_cells(const EngineRequest& r) const override;
  DecodeProbe probe_decode() override;
  std::vector<std::vector<uint8_t>> rgb8(const Tensor& images) const override {
    return infinity_images_to_rgb8(images);
  }
  // The InfinityRequest the engine runs for `r` (its prompts' embeddings, the defaults it does not override).
  // Text prompts are encoded here (every rank of the encoder's group must call it, in the same order).
  InfinityRequest infinity_request(const EngineRequest& r) const;
  // Requests may then give their prompts as text (EngineRequest::texts, encoded by `encoder`, which stays
  // resident) and their own aspect ratio (EngineRequest::h_div_w) at `resolution` (256, 512, 768, 1024).
  void accept_text(const T5TextEncoder* encoder, int resolution) {
    encoder_ = encoder;
    resolution_ = resolution;
  }
  // The schedule `r` runs on: its aspect ratio's at the family's resolution, or the defaults' (h_div_w 0).
  Schedule schedule(const EngineRequest& r) const;
  // Local hooks for request `id` on this rank (observer, teacher bits, progress, select_at_last_scale; a
  // policy object there replaces the one of the request's KV options: verify-golden replays recorded
  // selections through it, in Engine::run_one, whose engine has no KV cap to keep).
  void attach(int64_t id, const InfinityRunOptions& hooks) { hooks_[id] = hooks; }

 private:
  const InfinityModel& model_;
  const BsqVae& vae_;
  InfinityRequest defaults_;
  InfinityText text_;
  int64_t text_first_;
  std::vector<int64_t> text_start_;  // text_start_[i]: the first kv_compact row of prompt text_first_ + i
  std::map<int64_t, InfinityRunOptions> hooks_;
  const T5TextEncoder* encoder_ = nullptr;
  int resolution_ = 0;
};

}  // namespace skv
