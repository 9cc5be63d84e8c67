// scalekv.cpp - ScaleKV budgets, ASI, online calibration and selection (see scalekv.h).
#include "kvcache/scalekv.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "parallel/communicator.h"
#include "runtime/check.h"

namespace skv {

std::vector<double> zscores(const std::vector<double>& v) {
  const double n = static_cast<double>(v.size());
  if (v.empty()) return {};
  const double mean = std::accumulate(v.begin(), v.end(), 0.0) / n;
  double var = 0;
  for (double x : v) var += (x - mean) * (x - mean);
  const double sd = std::sqrt(var / n);
  std::vector<double> z(v.size(), 0.0);
  if (sd > 0)
    for (size_t i = 0; i < v.size(); ++i) z[i] = (v[i] - mean) / sd;
  return z;
}

int default_drafters_per_scale(int depth) { return std::max(1, (depth + 15) / 16); }

std::vector<std::vector<int64_t>> scalekv_budgets(const std::vector<std::vector<uint8_t>>& drafter, int64_t B, int k0,
                                                  const Schedule& schedule, const ScaleKVOptions& o) {
  const int K = static_cast<int>(drafter.size());
  std::vector<std::vector<int64_t>> out(K);
  int64_t prev_max = 0;
  for (int c = 0; c < K; ++c) {
    const int k = k0 + c;
    const int L = static_cast<int>(drafter[c].size());
    const int64_t nd = std::count(drafter[c].begin(), drafter[c].end(), 1), nr = L - nd;
    const double frac = K > 1 ? static_cast<double>(c) / (K - 1) : 0.0;
    const double r = o.refiner_first + (o.refiner_last - o.refiner_first) * frac;
    const int64_t min_target = std::max<int64_t>(o.window, static_cast<int64_t>(std::floor(r * B)));
    const int64_t limit = c == 0 ? schedule.offset(k + 1) : prev_max + schedule.tokens(k);
    int64_t bd = B, br = B;
    if (nd > 0 && nr > 0) {
      bd = std::min(limit, (B * L - nr * min_target) / nd);
      bd = std::max(bd, B);
      br = (B * L - nd * bd) / nr;
    } else if (nd > 0) {
      bd = B;
    }
    prev_max = nd > 0 ? bd : B;
    out[c].resize(L);
    for (int l = 0; l < L; ++l) out[c][l] = drafter[c][l] ? bd : br;
  }
  return out;
}

BudgetTable make_budget_table(const std::vector<std::vector<double>>& asi, int depth, const Schedule& schedule,
                              const ScaleKVOptions& o) {
  BudgetTable t;
  t.depth = depth;
  t.base_capacity = o.budget;
  t.window = o.window;
  t.schedule = schedule.scales();
  const int k0 = first_compressed_scale(schedule, o.budget), last = schedule.num_scales() - 2;
  const int K = std::max(0, last - k0 + 1);
  SKV_CHECK(static_cast<int>(asi.size()) == K, "internal: ASI for {} scales, {} compressed", asi.size(), K);
  std::vector<std::tuple<double, int, int>> all;  // (z, scale pos, layer)
  for (int c = 0; c < K; ++c) {
    t.scales.push_back(k0 + c);
    t.asi.push_back(asi[c]);
    t.z.push_back(zscores(asi[c]));
    for (int l = 0; l < depth; ++l) all.emplace_back(t.z.back()[l], c, l);
  }
  const int per = o.drafters_per_scale > 0 ? o.drafters_per_scale : default_drafters_per_scale(depth);
  const int nd = std::min<int>(static_cast<int>(all.size()), o.drafters_total > 0 ? o.drafters_total : per * K);
  std::stable_sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return std::get<0>(a) < std::get<0>(b); });
  t.drafter.assign(K, std::vector<uint8_t>(depth, 0));
  for (int i = 0; i < nd; ++i) t.drafter[std::get<1>(all[i])][std::get<2>(all[i])] = 1;
  t.budgets = scalekv_budgets(t.drafter, o.budget, k0, schedule, o);
  return t;
}

void AsiMeter::measure(const CompressionInput& in, int topk, int queries) {
  SKV_CHECK(in.q_attn != nullptr, "internal: the ASI needs the attention queries");
  const int64_t n = std::min<int64_t>(queries, in.cur_len);
  std::vector<int64_t> q_idx;
  for (int64_t i = 0; i < n; ++i) q_idx.push_back((2 * i + 1) * in.cur_len / (2 * n));  // evenly spaced centres
  Backend& be = *in.backend;
  Tensor out = be.empty({in.rows, in.heads, 2}, DType::F32, MemCategory::Workspace);
  be.attention_mass(*in.q_attn, q_idx, in.all_segments(), in.hist_len, in.attn_scale, topk, out);
  pending_.push_back({in.layer, &be, std::move(out)});
}

void AsiMeter::drain(std::vector<double>& sum, std::vector<double>& count) {
  for (const Pending& p : pending_) {
    const Tensor h = p.backend->device() == Device::CPU ? p.mass : p.backend->download(p.mass);
    double s = 0;
    const int64_t RH = h.numel() / 2;
    for (int64_t i = 0; i < RH; ++i) s += asi_value(h.f32()[2 * i], h.f32()[2 * i + 1]);
    sum[p.layer] += s;
    count[p.layer] += static_cast<double>(RH);
  }
  pending_.clear();
}

namespace {

void all_reduce(Communicator* comm, std::vector<double>& v) {
  if (!comm || comm->size() == 1) return;
  // F32 is what every transport reduces; counts and ASI sums are small enough for it. The reduction
  // order is fixed, so every rank gets bit-identical values and the same drafters.
  std::vector<float> f(v.begin(), v.end());
  comm->all_reduce_sum_host(f.data(), f.size(), DType::F32);  // host statistics: staged on device transports
  for (size_t i = 0; i < v.size(); ++i) v[i] = f[i];
}

ScoringSpec make_spec(const CompressionInput& in, const ScaleKVOptions& o) {
  ScoringSpec s;
  s.kernel = o.kernel;
  const ScaleShape& m = (*in.schedule)[in.scale];
  if (o.scoring == ScaleKVScoring::Reference) {
    s.q = in.q_raw;
    s.window = scalekv_reference_window(in.cur_len, in.total(), o.window);
    s.scale = 1.0f / std::sqrt(static_cast<float>(in.head_dim));
    s.mode = ScoreMode::RawSum;
    s.mask_window_keys = true;
    s.pool = PoolKind::Max;
  } else {
    s.q = in.q_attn;
    const int grid = std::max(1, static_cast<int>(std::lround(std::sqrt(static_cast<double>(o.window)))));
    s.window = grid_window(m.h, m.w * m.t, in.hist_len, grid);
    s.scale = in.attn_scale;
    s.mode = ScoreMode::SoftmaxMean;
    s.mask_window_keys = false;
    s.pool = PoolKind::Avg;
  }
  return s;
}

void check_options(const ScaleKVOptions& o, int depth) {
  SKV_CHECK(o.window > 0, "--kv-window {} must be positive", o.window);
  SKV_CHECK(o.budget >= o.window, "--kv-budget {} tokens is below the observation window of {} tokens; use at least {} or a smaller "
            "--kv-window", o.budget, o.window, o.window);
  SKV_CHECK(o.kernel > 0 && o.kernel % 2 == 1, "--scalekv-kernel {} must be odd and positive", o.kernel);
  SKV_CHECK(o.drafters_per_scale >= 0 && o.drafters_per_scale < depth,
            "--scalekv-drafters {} must be in [0, {}) (0: the default, ceil(depth / 16))", o.drafters_per_scale, depth);
  SKV_CHECK(o.refiner_first > 0 && o.refiner_first <= 1 && o.refiner_last > 0 && o.refiner_last <= 1,
            "refiner budget fractions {} and {} must be in (0, 1]", o.refiner_first, o.refiner_last);
  SKV_CHECK(o.asi_topk > 0 && o.asi_queries > 0, "ASI top-k {} and queries {} must be positive", o.asi_topk,
            o.asi_queries);
}

}  // namespace

ScaleKVPolicy::ScaleKVPolicy(const ScaleKVOptions& o, int depth, const Schedule& schedule)
    : o_(o), depth_(depth), schedule_(schedule) {
  if (o_.calibration == ScaleKVCalibration::Table) {
    SKV_CHECK(o_.table != nullptr, "internal: ScaleKV table calibration without a table");
    SKV_CHECK(o_.table->depth == depth, "{}: budget table for another depth: {} layers, the model has {}",
              o_.table->source, o_.table->depth, depth);
    if (o_.budget == 0) o_.budget = o_.table->base_capacity;
    o_.window = o_.table->window;
  }
  check_options(o_, depth);
  k0_ = skv::first_compressed_scale(schedule, o_.budget);
  last_ = schedule.num_scales() - 2;
  begin_request();
}

void ScaleKVPolicy::begin_request() {
  const int K = std::max(0, last_ - k0_ + 1);
  budgets_.assign(K, std::vector<int64_t>(depth_, o_.budget));
  drafters_.clear();
  online_asi_.clear();
  asi_sum_.assign(depth_, 0.0);
  asi_count_.assign(depth_, 0.0);
  asi_.clear();
  decided_ = o_.calibration == ScaleKVCalibration::Table;
  if (decided_)
    for (int c = 0; c < K; ++c)
      for (int l = 0; l < depth_; ++l) budgets_[c][l] = o_.table->capacity(l, k0_ + c);
}

int64_t ScaleKVPolicy::layer_budget(int layer, int scale) const {
  if (scale < k0_ || scale > last_) return -1;
  return budgets_[scale - k0_][layer];
}

int64_t ScaleKVPolicy::budget(int layer, int scale, int64_t total) const {
  if (o_.select_at_last_scale && o_.table && scale == last_ + 1 && scale >= k0_)
    return std::min(total, o_.table->capacity(layer, scale));
  if (scale < k0_ || scale > last_) return total;  // before k0 nothing is compressed; the last scale is never stored
  return std::min(total, budgets_[scale - k0_][layer]);
}

int64_t ScaleKVPolicy::planned_budget(int layer, int scale, int64_t total) const {
  if (o_.calibration == ScaleKVCalibration::Table) return budget(layer, scale, total);
  if (scale < k0_ || scale > last_) return total;
  return std::min(total, o_.budget);  // online: the uniform budget bounds the run (see scalekv.h)
}

int ScaleKVPolicy::first_unplanned_scale() const {
  // Online: scale k0 runs with the uniform budget the plan assumes; the budgets after it follow the ASI.
  if (o_.calibration == ScaleKVCalibration::Online) return k0_ + 1;
  return std::numeric_limits<int>::max();
}

QueryNeeds ScaleKVPolicy::queries() const {
  QueryNeeds n;
  n.raw = o_.scoring == ScaleKVScoring::Reference;
  n.attention = o_.scoring == ScaleKVScoring::Paper || o_.calibration == ScaleKVCalibration::Online;
  return n;
}

void ScaleKVPolicy::observe(const CompressionInput& in) {
  if (o_.calibration != ScaleKVCalibration::Online || in.scale != k0_ || decided_ || k0_ > last_) return;
  if (in.hist_len == 0) return;
  asi_.measure(in, o_.asi_topk, o_.asi_queries);
}

void ScaleKVPolicy::end_scale(int scale) {
  if (o_.calibration != ScaleKVCalibration::Online || scale != k0_ || decided_ || k0_ > last_) return;
  asi_.drain(asi_sum_, asi_count_);
  std::vector<double> v(asi_sum_);
  v.insert(v.end(), asi_count_.begin(), asi_count_.end());
  all_reduce(comm_, v);  // one all-reduce per scale: every rank gets the same sums
  online_asi_.assign(depth_, 0.0);
  for (int l = 0; l < depth_; ++l) online_asi_[l] = v[depth_ + l] > 0 ? v[l] / v[depth_ + l] : 0.0;
  const std::vector<double> z = zscores(online_asi_);
  std::vector<int> order(depth_);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return z[a] < z[b]; });
  const int nd = o_.drafters_per_scale > 0 ? o_.drafters_per_scale : default_drafters_per_scale(depth_);
  drafters_.assign(order.begin(), order.begin() + std::min(nd, depth_));
  std::sort(drafters_.begin(), drafters_.end());
  const int K = last_ - k0_ + 1;
  std::vector<std::vector<uint8_t>> flags(K, std::vector<uint8_t>(depth_, 0));
  for (int c = 1; c < K; ++c)
    for (int l : drafters_) flags[c][l] = 1;  // k0 itself ran with the uniform budget
  budgets_ = scalekv_budgets(flags, o_.budget, k0_, schedule_, o_);
  decided_ = true;
}

Tensor ScaleKVPolicy::select(const CompressionInput& in, int64_t budget) {
  const ScoringSpec spec = make_spec(in, o_);
  SelectionTrace trace = trace_;
  if (in.record) {  // a parity check asked for what this selection computed
    CompressionRecord& rec = *in.record;
    const int64_t total = in.total(), RH = static_cast<int64_t>(in.rows) * in.heads;
    rec.total = total;
    rec.scores.assign(static_cast<size_t>(RH * total), 0.0f);
    rec.pooled.assign(static_cast<size_t>(RH * total), 0.0f);
    rec.window.clear();
    for (int64_t rh = 0; rh < RH; ++rh)
      for (int64_t p : spec.window.cache_pos) rec.window.push_back(static_cast<int32_t>(p));
    trace = [&rec, total, inner = trace_](const CompressionInput& ci, int row, int head, const std::vector<float>& scores,
                                          const RowSelection& sel) {
      const size_t off = static_cast<size_t>((static_cast<int64_t>(row) * ci.heads + head) * total);
      std::copy(scores.begin(), scores.end(), rec.scores.begin() + static_cast<std::ptrdiff_t>(off));
      std::copy(sel.pooled.begin(), sel.pooled.end(), rec.pooled.begin() + static_cast<std::ptrdiff_t>(off));
      if (inner) inner(ci, row, head, scores, sel);
    };
  }
  Tensor kept = score_and_select(in, spec, budget, trace ? &trace : nullptr);
  if (in.record) in.record->kept = kept_on_host(*in.backend, kept);
  std::vector<int32_t> forced;
  if (kept_override_ && kept_override_(in, budget, forced)) {
    SKV_CHECK(static_cast<int64_t>(forced.size()) == kept.numel(), "teacher-forced kept indices: {} for {} x {}",
              forced.size(), static_cast<int64_t>(in.rows) * in.heads, budget);
    return kept_on_backend(*in.backend, forced, in.rows, in.heads, budget);
  }
  return kept;
}

AsiCollector::AsiCollector(const ScaleKVOptions& o, int depth, const Schedule& schedule)
    : o_(o), depth_(depth), schedule_(schedule) {
  check_options(o_, depth);
  k0_ = skv::first_compressed_scale(schedule, o_.budget);
  last_ = schedule.num_scales() - 2;
  SKV_CHECK(k0_ <= last_, "--kv-budget {} tokens keeps the whole cache of {} (nothing to calibrate); use a smaller "
            "budget", o_.budget, schedule.describe());
  total_.assign(last_ - k0_ + 1, std::vector<double>(depth_, 0.0));
  sum_.assign(depth_, 0.0);
  cnt_.assign(depth_, 0.0);
}

Tensor AsiCollector::select(const CompressionInput&, int64_t) {
  SKV_FAIL("internal: the ASI collector keeps the full cache");
}

void AsiCollector::observe(const CompressionInput& in) {
  if (in.scale < k0_ || in.scale > last_ || in.hist_len == 0) return;
  asi_.measure(in, o_.asi_topk, o_.asi_queries);
}

void AsiCollector::end_scale(int scale) {
  if (scale < k0_ || scale > last_) return;
  asi_.drain(sum_, cnt_);
  std::vector<double> v(sum_);
  v.insert(v.end(), cnt_.begin(), cnt_.end());
  all_reduce(comm_, v);
  for (int l = 0; l < depth_; ++l) total_[scale - k0_][l] += v[depth_ + l] > 0 ? v[l] / v[depth_ + l] : 0.0;
  std::fill(sum_.begin(), sum_.end(), 0.0);
  std::fill(cnt_.begin(), cnt_.end(), 0.0);
  if (scale == last_) ++requests_;
}

std::vector<std::vector<double>> AsiCollector::asi() const {
  std::vector<std::vector<double>> a(total_);
  for (auto& s : a)
    for (double& x : s) x /= std::max(1, requests_);
  return a;
}

}  // namespace skv
