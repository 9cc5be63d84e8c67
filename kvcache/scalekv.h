// scalekv.h - ScaleKV (arXiv 2505.19602): drafter/refiner budgets per (layer, scale) and
// observation-window token selection, with the Attention Selectivity Index (ASI) computed offline
// (`scalekv calibrate`, a budget table) or online from the request's own attention.
//
// Budgets, generalised to any schedule: B tokens per layer is the uniform budget; compression starts at
// the first scale k0 whose cumulative length exceeds B and runs up to the last stored scale. At a
// compressed scale with N_d drafters and N_r refiners, refiners get B_r(k), falling linearly from
// refiner_first * B at k0 to refiner_last * B (never below the window), drafters get
// B_d(k) = min(Limit(k), (B L - N_r B_r(k)) / N_d) with Limit(k) = B_d(k-1) + h_k w_k (a drafter keeps at
// most what it held plus the new map; cum(k0) at k0), and refiners take what drafters cannot use:
// N_d B_d(k) + N_r B_r(k) = B L at every compressed scale (Eq. 4, up to integer rounding), which is
// exactly how the released tables are built (N_d Max + N_r Min = 650 L).
//
// Scoring: `reference` (the default) is the released code: raw q of mat_qkv(x) against the stored
// (normalised, rotated) keys / sqrt(head_dim), the 16 grid-centre queries, window key columns masked,
// summed, max-pooled (kernel 5), top-k with the lower-index tie rule, window kept. It is the default
// because it is what the published budgets were tuned with and what the official goldens pin down
// exactly. `paper` is the paper's description: softmax attention of the attention's own queries,
// averaged over the window (a grid over any h x w map), average-pooled.
//
// Online calibration: the ASI of every layer is measured at k0 (whose budgets are the uniform B), summed
// over the tensor-parallel ranks with one all-reduce, z-scored, and the lowest `drafters_per_scale`
// layers become the drafters of every later scale. The memory plan assumes the uniform budget; the
// cache keeps the run inside it (a drafter that would outgrow the pool keeps what fits).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kvcache/budget_table.h"
#include "kvcache/policy.h"
#include "kvcache/selection.h"

namespace skv {

// The ASI statistics of the layers a scale measures, on this rank. measure() queues layer in.layer's
// attention mass ([R, H, 2], Backend::attention_mass) on its backend; drain() adds each queued layer's
// (sum of the ASI over rows and heads, rows x heads) to sum[layer] and count[layer], in measure order,
// and clears. On a device the host waits once, at the end of the scale, not after every layer.
class AsiMeter {
 public:
  void measure(const CompressionInput& in, int topk, int queries);
  void drain(std::vector<double>& sum, std::vector<double>& count);
  void clear() { pending_.clear(); }

 private:
  struct Pending {
    int layer;
    Backend* backend;
    Tensor mass;
  };
  std::vector<Pending> pending_;
};

enum class ScaleKVScoring { Reference, Paper };
enum class ScaleKVCalibration { Online, Table };

struct ScaleKVOptions {
  int64_t budget = 0;  // B: tokens per layer (the base capacity)
  int window = kScaleKVWindow;  // observation queries (a square: 4x4 grid)
  int kernel = 5;      // pooling kernel
  ScaleKVScoring scoring = ScaleKVScoring::Reference;
  ScaleKVCalibration calibration = ScaleKVCalibration::Online;
  std::shared_ptr<const BudgetTable> table;  // calibration == Table
  int drafters_per_scale = 0;  // 0: ceil(depth / 16) (2 of 32, 3 of 40 as the published tables)
  int drafters_total = 0;      // N_d over all compressed scales (calibrate); 0: drafters_per_scale * scales
  double refiner_first = 0.95, refiner_last = 0.65;  // refiner budget / B at the first and last compressed scale
  int asi_topk = 16;     // K' of the ASI: the top history attention weights summed
  int asi_queries = 64;  // current-map queries sampled (evenly spaced) for the ASI
  // Parity with the released code, which also "compresses" after the last scale (its K/V are never used
  // again): with a table, budget() at the last scale is the table's capacity there, so a parity check
  // can compare that selection too. Off for generation (nothing at the last scale is ever stored).
  bool select_at_last_scale = false;
};

// ASI(l, k) of one (row, head) from its attention mass statistics (Eq. 2).
inline double asi_value(double cur_mass, double top_hist_mass) { return cur_mass * top_hist_mass; }

// z-scores within one scale (population standard deviation; all zero when the values are equal).
std::vector<double> zscores(const std::vector<double>& v);

int default_drafters_per_scale(int depth);

// Eq. 4 budgets for the compressed scales k0..last of `schedule` given drafter flags [scale][layer].
std::vector<std::vector<int64_t>> scalekv_budgets(const std::vector<std::vector<uint8_t>>& drafter, int64_t B, int k0,
                                                  const Schedule& schedule, const ScaleKVOptions& o);

// A budget table from measured ASI [scale][layer] for the compressed scales (k0..S-2): the N_d (layer,
// scale) pairs with the lowest z-score overall are drafters.
BudgetTable make_budget_table(const std::vector<std::vector<double>>& asi, int depth, const Schedule& schedule,
                              const ScaleKVOptions& o);

class ScaleKVPolicy final : public KVPolicy {
 public:
  ScaleKVPolicy(const ScaleKVOptions& o, int depth, const Schedule& schedule);
  std::string name() const override { return "scalekv"; }
  int64_t budget(int layer, int scale, int64_t total) const override;
  int64_t planned_budget(int layer, int scale, int64_t total) const override;
  int first_unplanned_scale() const override;
  QueryNeeds queries() const override;
  void observe(const CompressionInput& in) override;
  Tensor select(const CompressionInput& in, int64_t budget) override;
  void begin_request() override;
  void end_scale(int scale) override;
  void set_communicator(Communicator* comm) override { comm_ = comm; }

  int first_compressed_scale() const { return k0_; }
  // Online: the drafters chosen (empty until k0 has run) and the ASI measured at k0.
  const std::vector<int>& drafters() const { return drafters_; }
  const std::vector<double>& online_asi() const { return online_asi_; }
  // The budget of (layer, scale) as decided so far (-1 for scales that are not compressed).
  int64_t layer_budget(int layer, int scale) const;
  void set_trace(SelectionTrace t) { trace_ = std::move(t); }
  // Teacher forcing for golden checks: when set and it fills `kept` for this compression, the cache keeps
  // those indices (the policy has scored and traced its own choice first).
  using KeptOverride = std::function<bool(const CompressionInput& in, int64_t budget, std::vector<int32_t>& kept)>;
  void set_kept_override(KeptOverride f) { kept_override_ = std::move(f); }

 private:
  ScaleKVOptions o_;
  int depth_;
  Schedule schedule_;
  int k0_ = 0, last_ = 0;
  std::vector<std::vector<int64_t>> budgets_;  // [k - k0][layer]
  std::vector<int> drafters_;
  std::vector<double> asi_sum_, asi_count_, online_asi_;
  AsiMeter asi_;
  bool decided_ = false;
  Communicator* comm_ = nullptr;
  SelectionTrace trace_;
  KeptOverride kept_override_;
};

// Offline calibration: keeps the full cache and measures the ASI of every layer at every compressed
// scale, accumulated over requests (sum over ranks with the communicator, as online).
class AsiCollector final : public KVPolicy {
 public:
  AsiCollector(const ScaleKVOptions& o, int depth, const Schedule& schedule);
  std::string name() const override { return "asi-collector"; }
  int64_t budget(int, int, int64_t total) const override { return total; }
  QueryNeeds queries() const override { return {false, true}; }
  void observe(const CompressionInput& in) override;
  Tensor select(const CompressionInput&, int64_t) override;
  void end_scale(int scale) override;
  void set_communicator(Communicator* comm) override { comm_ = comm; }
  int first_compressed_scale() const { return k0_; }
  // Mean ASI [k - k0][layer] over the requests run so far.
  std::vector<std::vector<double>> asi() const;
  int requests() const { return requests_; }

 private:
  ScaleKVOptions o_;
  int depth_;
  Schedule schedule_;
  int k0_ = 0, last_ = 0, requests_ = 0;
  std::vector<double> sum_, cnt_;               // this scale, per layer (local)
  AsiMeter asi_;
  std::vector<std::vector<double>> total_;      // [k - k0][layer] sum of per-request ASI
  Communicator* comm_ = nullptr;
};

}  // namespace skv
