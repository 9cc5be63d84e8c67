// engine.cpp - the engine's loop (see engine.h): rank 0 decides a plan, every rank applies it and runs
// the step.
#include "engine/engine.h"

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>

#include "parallel/communicator.h"
#include "runtime/check.h"
#include "runtime/models/request_kv.h"  // now_seconds

namespace skv {

namespace {

nlohmann::json kv_to_json(const KVOptions& o) {
  return {{"policy", o.policy},       {"budget", o.budget},       {"budget_table", o.budget_table},
          {"scoring", o.scoring},     {"calibration", o.calibration}, {"window", o.window},
          {"drafters", o.drafters},   {"sinks", o.sinks},         {"pyramid_beta", o.pyramid_beta},
          {"given", o.given}};
}

KVOptions kv_from_json(const nlohmann::json& j) {
  KVOptions o;
  o.policy = j.at("policy");
  o.budget = j.at("budget");
  o.budget_table = j.at("budget_table");
  o.scoring = j.at("scoring");
  o.calibration = j.at("calibration");
  o.window = j.at("window");
  o.drafters = j.at("drafters");
  o.sinks = j.at("sinks");
  o.pyramid_beta = j.at("pyramid_beta");
  o.given = j.at("given").get<std::set<std::string>>();
  return o;
}

nlohmann::json request_json(const EngineRequest& r) {
  return {{"id", r.id},   {"labels", r.labels}, {"prompts", r.prompts}, {"texts", r.texts},
          {"h_div_w", r.h_div_w},   {"image_ids", r.image_ids},
          {"seed", r.seed}, {"cfg", r.cfg},     {"top_k", r.top_k},     {"top_p", r.top_p},
          {"kv", kv_to_json(r.kv)}, {"previews", r.previews}};
}

EngineRequest request_of(const nlohmann::json& j) {
  EngineRequest r;
  r.id = j.at("id");
  r.labels = j.at("labels").get<std::vector<int64_t>>();
  r.prompts = j.at("prompts").get<std::vector<int64_t>>();
  r.texts = j.at("texts").get<std::vector<std::string>>();
  r.h_div_w = j.at("h_div_w");
  r.image_ids = j.at("image_ids").get<std::vector<uint32_t>>();
  r.seed = j.at("seed");
  r.cfg = j.at("cfg");
  r.top_k = j.at("top_k");
  r.top_p = j.at("top_p");
  r.kv = kv_from_json(j.at("kv"));
  r.previews = j.value("previews", false);
  return r;
}

// Share k of n images over `parts` ranks: never empty for share 0 of one or more images.
std::pair<int64_t, int64_t> decode_share(int64_t n, int64_t k, int64_t parts) {
  return {(n * k + parts - 1) / parts, (n * (k + 1) + parts - 1) / parts};
}

}  // namespace

std::string engine_request_to_json(const EngineRequest& r) { return request_json(r).dump(); }
EngineRequest engine_request_from_json(const std::string& s) { return request_of(nlohmann::json::parse(s)); }

BatchMode parse_batch_mode(const std::string& s, const std::string& option) {
  if (s == "sequential") return BatchMode::Sequential;
  if (s == "static") return BatchMode::Static;
  if (s == "continuous") return BatchMode::Continuous;
  SKV_FAIL("{} '{}': use sequential (one request at a time), static (a batch starts when the previous one has "
           "finished) or continuous (requests join at scale boundaries)", option, s);
}

const char* batch_mode_name(BatchMode m) {
  switch (m) {
    case BatchMode::Sequential: return "sequential";
    case BatchMode::Static: return "static";
    case BatchMode::Continuous: return "continuous";
  }
  return "?";
}

struct Engine::Flight {
  EngineRequest req;
  std::unique_ptr<KVPolicy> policy;
  std::unique_ptr<Generation> gen;  // declared after the policy it points to: destroyed first
  double submitted = 0, admitted = 0;
  int first_rank = 0;               // the rank that decodes the first share of its images
  int64_t batch_max = 0;
};

struct Engine::Plan {
  std::vector<EngineRequest> admit;
  std::vector<double> submitted;  // of each admitted request
  std::vector<int64_t> cancel;    // requests in flight that stop now
  bool stop = false;
  // Free pages the KV page pool may keep cached through the next iteration: of each page size, the pages its
  // requests will take in it, and beyond those the room its reservations leave under the caps, so cached pages
  // never take the measured peak past them.
  std::map<int64_t, int64_t> keep_pages;  // page bytes -> pages
  int64_t keep_bytes = 0;
};

namespace {

// --device-memory: the cap left after what every rank holds now (the largest), checked on every rank alike
// (after one host all-reduce, so a rank whose device is too small fails with all the others, not alone).
EngineOptions with_memory_cap(EngineOptions opt, Backend& be, Communicator& control, int64_t& resident) {
  resident = 0;
  if (opt.device_memory_bytes <= 0) return opt;
  be.synchronize();
  int64_t mine = be.allocator().stats().total_current;
  // A GPU also holds what the allocator does not see (the CUDA context, cuBLAS workspaces, NCCL buffers, freed
  // blocks its memory pool keeps): the driver's "used" figure counts them all, and its size bounds the option.
  int64_t free_b = 0, total_b = 0;
  if (be.device_memory_info(&free_b, &total_b)) mine = std::max(mine, total_b - free_b);
  const size_t n = static_cast<size_t>(control.size()), me = static_cast<size_t>(control.rank());
  std::vector<int64_t> held(2 * n, 0);  // per rank: bytes in use, the device's size (0: not known)
  held[2 * me] = mine;
  held[2 * me + 1] = total_b;
  control.all_reduce_sum_host(held.data(), held.size(), DType::I64);
  for (size_t r = 0; r < n; ++r) {
    resident = std::max(resident, held[2 * r]);
    SKV_CHECK(held[2 * r + 1] == 0 || opt.device_memory_bytes <= held[2 * r + 1], "--device-memory {} bytes ({}) is "
              "more than the device of rank {} has ({})", opt.device_memory_bytes,
              format_bytes(opt.device_memory_bytes), r, format_bytes(held[2 * r + 1]));
  }
  SKV_CHECK(resident < opt.device_memory_bytes, "--device-memory {} bytes ({}) leaves nothing for requests: the "
            "model and what else is resident take {} bytes ({}) on a rank", opt.device_memory_bytes,
            format_bytes(opt.device_memory_bytes), resident, format_bytes(resident));
  opt.limits.memory_cap_bytes = opt.device_memory_bytes - resident;
  if (opt.limits.kv_cap_bytes <= 0 || opt.limits.kv_cap_bytes > opt.limits.memory_cap_bytes)
    opt.limits.kv_cap_bytes = opt.limits.memory_cap_bytes;
  return opt;
}

}  // namespace

Engine::Engine(EngineFamily& family, Backend& backend, Communicator& group, Communicator& control, EngineOptions opt)
    : family_(family),
      be_(backend),
      group_(group),
      control_(control),
      decode_probe_(opt.device_memory_bytes > 0 ? family.probe_decode() : DecodeProbe{}),
      opt_(with_memory_cap(opt, backend, control, resident_bytes_)),
      pages_(backend),
      admission_(opt_.limits) {
  SKV_CHECK(control_.size() == group_.size() && control_.rank() == group_.rank(),
            "internal: the engine's control communicator ({} of {}) is not its group's ({} of {})", control_.rank(),
            control_.size(), group_.rank(), group_.size());
  be_.allocator().reset_peaks();
  kv_before_ = be_.allocator().stats().cur(MemCategory::KV);
  comm_before_ = comm_seconds();
  stats_.kv_cap_bytes = opt_.limits.kv_cap_bytes;
  stats_.device_memory_bytes = opt_.device_memory_bytes;
  stats_.resident_bytes = resident_bytes_;
  stats_.memory_cap_bytes = opt_.limits.memory_cap_bytes;
}

std::vector<StepDemand> Engine::demand(const EngineRequest& r) const {
  const auto policy = family_.make_policy(r);
  std::vector<StepDemand> d = family_.demand(r, *policy);
  if (opt_.device_memory_bytes > 0 && !d.empty()) {
    // Its decode: this rank's share at its last step (a rank decodes at most ceil(n / ranks) of its images,
    // all of them when every rank decodes everything); rank 0's previews of all its images after every other.
    const int64_t n = r.images(), g = group_.size();
    const int64_t share = opt_.decode_everywhere ? n : (n + g - 1) / g, cells = family_.image_cells(r);
    d.back().decode_bytes = decode_bytes(decode_probe_, share, cells);
    if (r.previews)
      for (size_t t = 0; t + 1 < d.size(); ++t) d[t].decode_bytes = decode_bytes(decode_probe_, n, cells);
  }
  return d;
}

std::string device_memory_text(const EngineStats& s) {
  if (s.device_memory_bytes <= 0) return "";
  return fmt::format("device memory {}: {} resident, requests admitted into {}", format_bytes(s.device_memory_bytes),
                     format_bytes(s.resident_bytes), format_bytes(s.memory_cap_bytes));
}

Engine::~Engine() = default;

double Engine::comm_seconds() const {  // the group's collectives, and the plans' when they travel apart
  return group_.seconds_in_collectives() + (&control_ != &group_ ? control_.seconds_in_collectives() : 0.0);
}

void Engine::submit(EngineRequest r) {
  SKV_CHECK(group_.rank() == 0, "internal: requests are submitted on rank 0 of the group");
  family_.check(r);
  std::vector<StepDemand> demand = this->demand(r);
  std::lock_guard<std::mutex> lk(mu_);
  SKV_CHECK(!closed_, "the engine is shutting down and takes no new requests");
  SKV_CHECK(!waiting_.count(r.id) && !admission_.ledger().contains(r.id), "request id {} is already queued or in "
            "flight", r.id);
  admission_.submit(r.id, std::move(demand));  // throws, naming the limit, if it could never fit
  const int64_t id = r.id;
  waiting_.emplace(id, Queued{std::move(r), now_seconds()});
  ++stats_.submitted;
  cv_.notify_all();
}

std::string Engine::never_fits(const EngineRequest& r) const {
  family_.check(r);
  return admission_.ledger().never_fits(demand(r));  // limits only: no lock needed
}

void Engine::cancel(int64_t id) {
  SKV_CHECK(group_.rank() == 0, "internal: requests are cancelled on rank 0 of the group");
  std::lock_guard<std::mutex> lk(mu_);
  cancels_.push_back(id);
  cv_.notify_all();
}

void Engine::close() {
  SKV_CHECK(group_.rank() == 0, "internal: the engine is closed on rank 0 of the group");
  std::lock_guard<std::mutex> lk(mu_);
  closed_ = true;
  cv_.notify_all();
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

int64_t Engine::waiting() const {
  std::lock_guard<std::mutex> lk(mu_);
  return admission_.waiting();
}

int64_t Engine::in_flight() const {
  std::lock_guard<std::mutex> lk(mu_);
  return admission_.ledger().in_flight();
}

int64_t Engine::kv_reserved_bytes() const {
  std::lock_guard<std::mutex> lk(mu_);
  return admission_.ledger().reserved(0).kv_bytes;
}

Engine::Plan Engine::decide() {
  if (opt_.on_boundary) opt_.on_boundary(stats().iterations);
  std::unique_lock<std::mutex> lk(mu_);
  if (flights_.empty())  // idle: wait for work, but hand the other ranks a plan at least once a period
    cv_.wait_for(lk, std::chrono::duration<double>(opt_.idle_plan_seconds),
                 [&] { return !cancels_.empty() || closed_ || admission_.waiting() > 0; });
  Plan p;
  for (int64_t id : cancels_) {
    const bool queued = waiting_.count(id) != 0;
    const bool flying = std::any_of(flights_.begin(), flights_.end(), [&](const auto& f) { return f->req.id == id; });
    if (!queued && !flying) continue;  // finished already, or never known
    admission_.cancel(id);
    if (queued) {
      waiting_.erase(id);
      ++stats_.cancelled;
    } else {
      p.cancel.push_back(id);
    }
  }
  cancels_.clear();
  const int64_t flying = admission_.ledger().in_flight();
  const int64_t room = opt_.max_in_flight > 0 ? std::max<int64_t>(0, opt_.max_in_flight - flying)
                                              : std::numeric_limits<int64_t>::max();
  std::vector<int64_t> ids;
  switch (opt_.mode) {
    case BatchMode::Continuous: ids = admission_.admit_ready(room); break;
    case BatchMode::Static: if (flying == 0) ids = admission_.admit_ready(room); break;
    case BatchMode::Sequential: if (flying == 0) ids = admission_.admit_ready(1); break;
  }
  const int64_t next_kv = admission_.ledger().reserved(0).kv_bytes, next_memory = admission_.ledger().reserved_memory(0);
  stats_.kv_planned_peak_bytes = std::max(stats_.kv_planned_peak_bytes, next_kv);
  stats_.memory_planned_peak_bytes = std::max(stats_.memory_planned_peak_bytes, next_memory);
  for (int64_t id : ids) {
    auto it = waiting_.find(id);
    SKV_CHECK(it != waiting_.end(), "internal: admitted request {} was not waiting", id);
    p.admit.push_back(std::move(it->second.req));
    p.submitted.push_back(it->second.submitted);
    waiting_.erase(it);
  }
  p.stop = closed_ && waiting_.empty() && p.admit.empty() && admission_.ledger().empty();
  // The room the next iteration's reservations leave under each cap (kv_cap 0: only the memory cap).
  const AdmissionLimits& lim = opt_.limits;
  int64_t slack = std::numeric_limits<int64_t>::max();
  if (lim.kv_cap_bytes > 0) slack = lim.kv_cap_bytes - next_kv;
  if (lim.memory_cap_bytes > 0) slack = std::min(slack, lim.memory_cap_bytes - next_memory);
  // Free pages may stay cached for the pages the requests in flight take in that iteration (their reservations
  // hold them) and for the room left under the caps, no more.
  p.keep_pages = admission_.ledger().next_page_growth();
  p.keep_bytes = std::max<int64_t>(0, slack);
  return p;
}

void Engine::broadcast_plan(Plan& p) {
  if (control_.size() == 1) return;
  std::string text;
  if (control_.rank() == 0) {
    nlohmann::json j = {{"cancel", p.cancel}, {"submitted", p.submitted}, {"stop", p.stop},
                        {"keep_pages", p.keep_pages}, {"keep_bytes", p.keep_bytes}};
    j["admit"] = nlohmann::json::array();
    for (const EngineRequest& r : p.admit) j["admit"].push_back(request_json(r));
    text = j.dump();
  }
  int64_t n = static_cast<int64_t>(text.size());
  control_.broadcast_host(&n, sizeof n, 0);
  text.resize(static_cast<size_t>(n));
  control_.broadcast_host(text.data(), text.size(), 0);
  if (control_.rank() == 0) return;
  const nlohmann::json j = nlohmann::json::parse(text);
  p.cancel = j.at("cancel").get<std::vector<int64_t>>();
  p.submitted = j.at("submitted").get<std::vector<double>>();
  p.stop = j.at("stop");
  p.keep_pages = j.at("keep_pages").get<std::map<int64_t, int64_t>>();
  p.keep_bytes = j.at("keep_bytes");
  p.admit.clear();
  for (const auto& r : j.at("admit")) p.admit.push_back(request_of(r));
}

void Engine::apply(const Plan& p, const std::function<void(EngineResult&&)>& on_done) {
  for (int64_t id : p.cancel) {
    const auto it = std::find_if(flights_.begin(), flights_.end(), [&](const auto& f) { return f->req.id == id; });
    SKV_CHECK(it != flights_.end(), "internal: cancelling request {}, which is not in flight on rank {}", id,
              group_.rank());
    EngineResult r;
    r.id = id;
    r.cancelled = true;
    r.submitted = (*it)->submitted;
    r.admitted = (*it)->admitted;
    flights_.erase(it);  // its cache (and so its KV) goes now
    r.finished = now_seconds();
    {
      std::lock_guard<std::mutex> lk(mu_);
      ++stats_.cancelled;
    }
    on_done(std::move(r));
  }
  // Before the new requests allocate anything: cached pages beyond the room under the caps go back now.
  pages_.trim(p.keep_pages, p.keep_bytes);
  const double now = now_seconds();
  for (size_t i = 0; i < p.admit.size(); ++i) {
    auto f = std::make_unique<Flight>();
    f->req = p.admit[i];
    f->submitted = p.submitted[i];
    f->admitted = now;
    f->first_rank = static_cast<int>(admissions_++ % group_.size());
    f->policy = family_.make_policy(f->req);
    auto [b, e] = decode_share(f->req.images(), (group_.rank() - f->first_rank + group_.size()) % group_.size(),
                               group_.size());
    if (opt_.decode_everywhere) std::tie(b, e) = std::pair<int64_t, int64_t>{0, f->req.images()};
    f->gen = family_.start(f->req, f->policy.get(), pages_, static_cast<int>(b), static_cast<int>(e));
    flights_.push_back(std::move(f));
  }
  std::lock_guard<std::mutex> lk(mu_);
  stats_.admitted += static_cast<int64_t>(p.admit.size());
  stats_.max_in_flight = std::max(stats_.max_in_flight, static_cast<int64_t>(flights_.size()));
}

void Engine::step(const std::function<void(EngineResult&&)>& on_done) {
  std::vector<Generation*> batch;
  for (const auto& f : flights_) {
    batch.push_back(f->gen.get());
    f->batch_max = std::max<int64_t>(f->batch_max, static_cast<int64_t>(flights_.size()));
  }
  const double t0 = now_seconds();
  family_.step(batch);
  const double t1 = now_seconds();
  {
    std::lock_guard<std::mutex> lk(mu_);
    ++stats_.iterations;
    stats_.step_seconds += t1 - t0;
    last_step_seconds_ = t1 - t0;
    if (group_.rank() == 0) admission_.advance();
    stats_.kv_peak_bytes = be_.allocator().stats().pk(MemCategory::KV) - kv_before_;
    stats_.kv_pages_allocated = pages_.allocated_pages();
    stats_.kv_pool_peak_bytes = pages_.peak_held_bytes();
  }
  if (opt_.on_preview && group_.rank() == 0)
    for (const auto& f : flights_)
      if (f->req.previews && !f->gen->done()) {
        EngineOptions::Preview pv;
        pv.id = f->req.id;
        pv.scales_done = f->gen->scales_done();
        pv.num_scales = f->gen->num_scales();
        const Tensor im = f->gen->preview();
        pv.height = static_cast<int>(im.dim(2));
        pv.width = static_cast<int>(im.dim(3));
        pv.rgb = family_.rgb8(im);
        opt_.on_preview(pv);
      }
  // Every rank first decodes its shares of every request that finished in this step (the ranks decode
  // in parallel), then the shares travel, request by request in flight order.
  std::vector<EngineResult> results;
  for (const auto& f : flights_)
    if (f->gen->done()) {
      results.emplace_back();
      results.back().id = f->req.id;
      results.back().gen = f->gen->finish();  // decodes this rank's share of its images
    }
  size_t k_done = 0;
  for (auto it = flights_.begin(); it != flights_.end();) {
    Flight& f = **it;
    if (!f.gen->done()) {
      ++it;
      continue;
    }
    EngineResult& r = results[k_done++];
    gather_images(f, r);
    r.submitted = f.submitted;
    r.admitted = f.admitted;
    r.steps_in_batch_max = f.batch_max;
    it = flights_.erase(it);  // its KV goes before the next admission
  }
  for (EngineResult& r : results) {
    r.finished = now_seconds();
    {
      std::lock_guard<std::mutex> lk(mu_);
      ++stats_.finished;
    }
    on_done(std::move(r));
  }
}

void Engine::gather_images(const Flight& f, EngineResult& r) {
  const int n = f.req.images(), P = group_.size();
  // The decoded images are [count, 3, H, W]; the first share's rank tells the others H and W.
  auto check_images = [&](int64_t count, bool sets_size) {
    const Tensor& im = r.gen.images;
    SKV_CHECK(im.defined() && im.ndim() == 4 && im.dim(0) == count && im.dim(1) == 3 &&
              (sets_size || (im.dim(2) == r.height && im.dim(3) == r.width)),
              "request {}: the decoder made {} for {} images{}", r.id, im.defined() ? im.describe() : "nothing",
              count, sets_size ? std::string() : fmt::format(" of {}x{}", r.width, r.height));
    r.height = static_cast<int>(im.dim(2));
    r.width = static_cast<int>(im.dim(3));
  };
  if (opt_.decode_everywhere) {
    check_images(n, true);
    r.rgb = family_.rgb8(r.gen.images);
    return;
  }
  if (f.first_rank == group_.rank()) check_images(decode_share(n, 0, P).second, true);  // share 0: never empty
  if (P > 1) {  // the image size, from the rank that decoded the first share
    int32_t hw[2] = {r.height, r.width};
    control_.broadcast_host(hw, sizeof hw, f.first_rank);
    r.height = hw[0];
    r.width = hw[1];
  }
  const size_t px = static_cast<size_t>(r.height) * r.width * 3;
  std::vector<uint8_t> all(px * static_cast<size_t>(n));
  for (int k = 0; k < P; ++k) {
    const int src = (f.first_rank + k) % P;
    const auto [b, e] = decode_share(n, k, P);
    if (e == b) continue;
    if (src == group_.rank()) {
      check_images(e - b, false);
      const auto rgb = family_.rgb8(r.gen.images);
      for (size_t i = 0; i < rgb.size(); ++i) std::copy(rgb[i].begin(), rgb[i].end(), all.begin() + (b + i) * px);
    }
    if (P > 1) control_.broadcast_host(all.data() + b * px, static_cast<size_t>(e - b) * px, src);
  }
  for (int i = 0; i < n; ++i)
    r.rgb.emplace_back(all.begin() + static_cast<std::ptrdiff_t>(i * px), all.begin() + static_cast<std::ptrdiff_t>((i + 1) * px));
  r.gen.images = Tensor();  // a share at most: the 8-bit images are the result
}

EngineResult Engine::run_one(EngineFamily& family, Backend& backend, Communicator& group, Communicator& control,
                             EngineRequest r, bool decode_everywhere) {
  EngineOptions o;
  o.limits.kv_cap_bytes = std::numeric_limits<int64_t>::max() / 4;
  o.decode_everywhere = decode_everywhere;
  Engine e(family, backend, group, control, o);
  if (group.rank() == 0) {
    e.submit(std::move(r));
    e.close();
  }
  std::vector<EngineResult> out;
  e.run([&](EngineResult&& x) { out.push_back(std::move(x)); });
  SKV_CHECK(out.size() == 1 && !out[0].cancelled, "internal: a single-request engine returned {} results", out.size());
  return std::move(out[0]);
}

void Engine::run(const std::function<void(EngineResult&&)>& on_done) {
  for (;;) {
    Plan p;
    if (group_.rank() == 0) p = decide();
    broadcast_plan(p);
    apply(p, on_done);
    if (p.stop) break;
    if (!flights_.empty()) step(on_done);
    {
      std::lock_guard<std::mutex> lk(mu_);
      const MemStats ms = be_.allocator().stats();  // after the step's decodes and previews
      stats_.kv_cached_bytes = pages_.free_bytes();
      stats_.kv_used_bytes = ms.cur(MemCategory::KV) - kv_before_ - stats_.kv_cached_bytes;
      stats_.memory_peak_bytes = ms.total_peak;
      stats_.comm_seconds = comm_seconds() - comm_before_;
    }
    collective_keepalive();
    if (opt_.on_progress) {
      EngineProgress pr;
      {
        std::lock_guard<std::mutex> lk(mu_);
        pr.iteration = stats_.iterations;
        pr.finished = stats_.finished;
      }
      pr.in_flight = static_cast<int64_t>(flights_.size());
      pr.step_seconds = last_step_seconds_;
      if (!flights_.empty()) {
        pr.first_id = flights_.front()->req.id;
        pr.first_scales_done = flights_.front()->gen->scales_done();
        pr.first_num_scales = flights_.front()->gen->num_scales();
      }
      opt_.on_progress(pr);
    }
  }
}

}  // namespace skv
