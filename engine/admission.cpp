// admission.cpp - the admission ledger and the FCFS queue over it (see admission.h).
#include "engine/admission.h"

#include <algorithm>

#include "runtime/check.h"

namespace skv {

std::vector<StepDemand> request_demand(const KVPlan& plan, int rows) {
  SKV_CHECK(rows > 0 && plan.token_bytes > 0, "request demand: {} rows, {} bytes per token", rows, plan.token_bytes);
  std::vector<StepDemand> d;
  for (size_t k = 0; k < plan.scales.size(); ++k) {
    StepDemand x;
    x.kv_bytes = plan.step_bytes(k);
    x.kv_pages = plan.pages(plan.scales[k].limit);
    x.kv_page_bytes = plan.page_slots > 0 ? plan.page_bytes() : 0;
    x.step_tokens = checked_mul(plan.scales[k].tokens, static_cast<int64_t>(rows), "query tokens of a step");
    d.push_back(x);
  }
  return d;
}

AdmissionLedger::AdmissionLedger(AdmissionLimits limits) : limits_(limits) {
  SKV_CHECK(limits_.kv_cap_bytes > 0, "the KV memory cap must be positive, got {} bytes", limits_.kv_cap_bytes);
  SKV_CHECK(limits_.max_step_tokens >= 0, "--max-step-tokens {} must be positive (0: no bound)", limits_.max_step_tokens);
  SKV_CHECK(limits_.memory_cap_bytes >= 0, "the memory cap must be >= 0 (0: none), got {} bytes",
            limits_.memory_cap_bytes);
}

std::string AdmissionLedger::never_fits(const std::vector<StepDemand>& demand) const {
  if (demand.empty()) return "a request with no scale steps";
  for (size_t i = 0; i < demand.size(); ++i) {
    const StepDemand& s = demand[i];
    if (s.kv_bytes < 0 || s.step_tokens < 0 || s.other_bytes < 0 || s.decode_bytes < 0)
      return fmt::format("step {} has a negative demand", i);
    if (limits_.memory_cap_bytes > 0 &&
        (s.kv_bytes > limits_.memory_cap_bytes || s.other_bytes > limits_.memory_cap_bytes ||
         s.decode_bytes > limits_.memory_cap_bytes ||
         static_cast<__int128>(s.kv_bytes) + s.other_bytes + s.decode_bytes > limits_.memory_cap_bytes))
      return fmt::format("its scale step {} needs {} KV bytes, {} bytes of activations and conditioning and {} of "
                         "decoding, more than the {} bytes --device-memory leaves after the resident weights", i,
                         s.kv_bytes, s.other_bytes, s.decode_bytes, limits_.memory_cap_bytes);
    if (s.kv_bytes > limits_.kv_cap_bytes)
      return fmt::format("its scale step {} needs {} KV bytes, more than the whole KV memory of {} bytes", i, s.kv_bytes,
                         limits_.kv_cap_bytes);
    if (limits_.max_step_tokens > 0 && s.step_tokens > limits_.max_step_tokens)
      return fmt::format("its scale step {} has {} query tokens, more than --max-step-tokens {}", i, s.step_tokens,
                         limits_.max_step_tokens);
  }
  return {};
}

bool AdmissionLedger::fits(const std::vector<StepDemand>& demand) const {
  if (!never_fits(demand).empty()) return false;
  for (size_t t = 0; t < demand.size(); ++t) {
    const StepDemand sums = t < total_.size() ? total_[t] : StepDemand{};
    // sums <= cap and demand <= cap (never_fits), so the sums below cannot overflow.
    if (sums.kv_bytes + demand[t].kv_bytes > limits_.kv_cap_bytes) return false;
    if (limits_.max_step_tokens > 0 && sums.step_tokens + demand[t].step_tokens > limits_.max_step_tokens) return false;
    if (limits_.memory_cap_bytes == 0) continue;
    const StepDemand r = reserved(static_cast<int64_t>(t));  // with the largest decode: a pass over the flights
    // Five terms of at most the cap each: summed in 128 bits, so a cap near 2^63 cannot wrap.
    if (static_cast<__int128>(r.kv_bytes) + r.other_bytes + demand[t].kv_bytes + demand[t].other_bytes +
            std::max(r.decode_bytes, demand[t].decode_bytes) >
        limits_.memory_cap_bytes)
      return false;
  }
  return true;
}

void AdmissionLedger::admit(int64_t id, const std::vector<StepDemand>& demand) {
  SKV_CHECK(!flights_.count(id), "internal: request {} is already in flight", id);
  SKV_CHECK(fits(demand), "internal: request {} admitted without room for it", id);
  if (total_.size() < demand.size()) total_.resize(demand.size());
  for (size_t t = 0; t < demand.size(); ++t) {
    total_[t].kv_bytes += demand[t].kv_bytes;
    total_[t].step_tokens += demand[t].step_tokens;
    total_[t].other_bytes += demand[t].other_bytes;
  }
  flights_[id] = Flight{demand, 0};
}

std::vector<int64_t> AdmissionLedger::advance() {
  std::vector<int64_t> done;
  for (auto it = flights_.begin(); it != flights_.end();) {
    if (++it->second.next == it->second.demand.size()) {
      done.push_back(it->first);
      it = flights_.erase(it);
    } else {
      ++it;
    }
  }
  if (!total_.empty()) total_.pop_front();
  if (flights_.empty()) total_.clear();
  return done;
}

void AdmissionLedger::cancel(int64_t id) {
  const auto it = flights_.find(id);
  SKV_CHECK(it != flights_.end(), "internal: cancelling request {}, which is not in flight", id);
  const Flight& f = it->second;
  for (size_t i = f.next; i < f.demand.size(); ++i) {
    StepDemand& r = total_[i - f.next];
    r.kv_bytes -= f.demand[i].kv_bytes;
    r.step_tokens -= f.demand[i].step_tokens;
    r.other_bytes -= f.demand[i].other_bytes;
  }
  flights_.erase(it);
  while (!total_.empty() && total_.back().kv_bytes == 0 && total_.back().step_tokens == 0 &&
         total_.back().other_bytes == 0)
    total_.pop_back();
}

StepDemand AdmissionLedger::reserved(int64_t t) const {
  if (t < 0 || t >= static_cast<int64_t>(total_.size())) return {};
  StepDemand r = total_[static_cast<size_t>(t)];
  for (const auto& [id, f] : flights_) {  // decodes run one after another: the largest of the iteration's
    const size_t i = f.next + static_cast<size_t>(t);
    if (i < f.demand.size()) r.decode_bytes = std::max(r.decode_bytes, f.demand[i].decode_bytes);
  }
  return r;
}

std::map<int64_t, int64_t> AdmissionLedger::next_page_growth() const {
  std::map<int64_t, int64_t> n;
  for (const auto& [id, f] : flights_) {
    if (f.next >= f.demand.size()) continue;
    const StepDemand& d = f.demand[f.next];
    const int64_t grow = d.kv_pages - (f.next > 0 ? f.demand[f.next - 1].kv_pages : 0);
    if (grow > 0 && d.kv_page_bytes > 0) n[d.kv_page_bytes] += grow;
  }
  return n;
}

int64_t AdmissionLedger::reserved_memory(int64_t t) const {
  const StepDemand r = reserved(t);
  return r.kv_bytes + r.other_bytes + r.decode_bytes;
}

void FcfsAdmission::submit(int64_t id, std::vector<StepDemand> demand) {
  const std::string why = ledger_.never_fits(demand);
  SKV_CHECK(why.empty(), "request {} can never run: {}", id, why);
  queue_.push_back(Waiting{id, std::move(demand)});
}

std::vector<int64_t> FcfsAdmission::admit_ready(int64_t max) {
  std::vector<int64_t> admitted;
  while (!queue_.empty() && static_cast<int64_t>(admitted.size()) < max && ledger_.fits(queue_.front().demand)) {
    ledger_.admit(queue_.front().id, queue_.front().demand);
    admitted.push_back(queue_.front().id);
    queue_.pop_front();
  }
  return admitted;
}

void FcfsAdmission::cancel(int64_t id) {
  const auto it = std::find_if(queue_.begin(), queue_.end(), [id](const Waiting& w) { return w.id == id; });
  if (it != queue_.end()) {
    queue_.erase(it);
    return;
  }
  ledger_.cancel(id);
}

int64_t burst_concurrency(const std::vector<StepDemand>& demand, AdmissionLimits limits, int64_t n) {
  SKV_CHECK(n >= 1, "a burst of {} requests", n);
  AdmissionLedger l(limits);
  const std::string why = l.never_fits(demand);
  SKV_CHECK(why.empty(), "a request can never run: {}", why);
  // FCFS over equal requests: the next one is admitted while it fits (no queue of copies: memory grows with
  // the requests in flight, not with the burst).
  const int64_t steps = static_cast<int64_t>(demand.size());
  std::map<int64_t, int64_t> started;  // in flight: id -> its first iteration
  int64_t next = 0, most = 0, finished = 0;
  for (int64_t it = 0; finished < n; ++it) {
    for (; next < n && l.fits(demand); ++next) {
      l.admit(next, demand);
      started[next] = it;
    }
    // An empty iteration with requests waiting would never end: a request fits an empty ledger (never_fits).
    SKV_CHECK(l.in_flight() > 0, "burst replay: nothing admitted at iteration {}", it);
    SKV_CHECK(l.reserved(0).kv_bytes <= limits.kv_cap_bytes, "burst replay: iteration {} reserves {} bytes over the "
              "cap of {}", it, l.reserved(0).kv_bytes, limits.kv_cap_bytes);
    most = std::max(most, l.in_flight());
    for (const int64_t id : l.advance()) {
      SKV_CHECK(it - started.at(id) + 1 == steps, "burst replay: request {} was held back", id);
      started.erase(id);
      ++finished;
    }
  }
  return most;
}

}  // namespace skv
