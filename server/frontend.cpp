// frontend.cpp - see frontend.h.
#include "server/frontend.h"

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <ctime>
#include <nlohmann/json.hpp>
#include <thread>

#include "runtime/check.h"
#include "runtime/file_io.h"
#include "runtime/image_io.h"
#include "runtime/models/request_kv.h"  // now_seconds
#include "server/web_page.h"

namespace skv {

namespace {

using json = nlohmann::json;

bool same_secret(const std::string& a, const std::string& b) {  // in time independent of where they differ
  unsigned diff = static_cast<unsigned>(a.size() ^ b.size());
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned>(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

HttpResponse error_response(const HttpRequest& req, int status, const std::string& message,
                            const std::string& type = "invalid_request_error", const std::string& param = "") {
  return make_response(req, static_cast<http::status>(status), error_body(message, type, param));
}

std::string png_b64(const std::vector<uint8_t>& rgb, int w, int h) {
  return base64_encode(encode_png_rgb(rgb.data(), w, h));
}

}  // namespace

struct Frontend::Job {
  int64_t id = 0;
  int replica = 0;
  ImageRequest req;
  EngineRequest engine;
  std::shared_ptr<HttpExchange> ex;  // null: the warm-up
  HttpRequest head;                  // the request line and headers (version, keep-alive) for the answer
  double arrived = 0;
  int previews_sent = 0;
};

// A job that ends without images: an error event on a stream, 503 otherwise.
void Frontend::answer_error(const Job& job, const std::string& message) {
  if (job.req.stream) {
    job.ex->send_event("error", error_body(message, "server_error"));
    job.ex->end_events();
  } else {
    job.ex->reply(error_response(job.head, 503, message, "server_error"));
  }
}


Frontend::Frontend(ServeOptions opt, ModelInfo model, std::vector<ReplicaHandle*> replicas)
    : opt_(std::move(opt)), model_(std::move(model)), replicas_(std::move(replicas)),
      metrics_(static_cast<int>(replicas_.size())) {
  SKV_CHECK(!replicas_.empty(), "internal: a front end with no replica");
  SKV_CHECK(opt_.max_queue >= 1, "--max-queue {} must be >= 1", opt_.max_queue);
  SKV_CHECK(opt_.io_threads >= 1 && opt_.io_threads <= 64, "--io-threads {} must be in [1, 64]", opt_.io_threads);
  http_ = std::make_unique<HttpServer>(opt_.host, opt_.port, opt_.http,
                                       [this](const HttpRequest& req, std::shared_ptr<HttpExchange> ex) {
                                         handle(req, std::move(ex));
                                       });
}

Frontend::~Frontend() {
  http_->stop(0);  // no I/O thread may run a handler on members destroyed below
  std::thread drain;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (state_ == State::Serving) state_ = State::Failed;
    drain.swap(drain_thread_);
  }
  cv_.notify_all();
  if (drain.joinable()) drain.join();
}

int Frontend::port() const { return http_->port(); }

// The warm-up request of a replica: one image of class 0 (or a short prompt) of the default size with the
// server's KV policy (ids -1, -2, ...).
EngineRequest Frontend::warmup_request(int replica) const {
  EngineRequest r;
  r.id = -1 - replica;
  if (model_.text())
    r.texts = {"a photo of a cat"};
  else
    r.labels = {0};
  r.image_ids = {0};
  r.kv = opt_.kv;
  r.kv.given.clear();
  return r;
}

void Frontend::start() {
  if (opt_.warmup) {  // a cap too small for even the warm-up (one image, the server's policy) is an error now
    const std::string why = replicas_[0]->never_fits(warmup_request(0));
    SKV_CHECK(why.empty(), "--kv-memory / --device-memory: one image with --kv-policy {} can never run: {}", opt_.kv.policy, why);
  }
  http_->on_signals({SIGTERM, SIGINT, SIGUSR1}, [this](int sig) {
    drain(fmt::format("signal {}", sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "SIGUSR1"));
  });
  http_->start(opt_.io_threads);
  if (!opt_.port_file.empty()) write_file_atomic(opt_.port_file, std::to_string(port()) + "\n");
  if (!opt_.warmup) {
    ready_ = true;
    return;
  }
  // One warm-up request per replica (ids -1, -2, ...; client jobs count from 1): ready when all are done.
  std::vector<std::shared_ptr<Job>> warm;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (size_t i = 0; i < replicas_.size(); ++i) {
      auto job = std::make_shared<Job>();
      job->replica = static_cast<int>(i);
      job->engine = warmup_request(job->replica);
      job->id = job->engine.id;
      job->arrived = now_seconds();
      jobs_[job->id] = job;
      warm.push_back(job);
    }
    warmups_left_ = static_cast<int>(warm.size());
  }
  for (const auto& job : warm) replicas_[static_cast<size_t>(job->replica)]->submit(job->engine);
}

void Frontend::handle(const HttpRequest& req, std::shared_ptr<HttpExchange> ex) {
  const std::string target(req.target());
  const std::string path = target.substr(0, target.find('?'));
  const bool get = req.method() == http::verb::get || req.method() == http::verb::head;
  auto method_not_allowed = [&](const char* allow) {
    HttpResponse res = error_response(req, 405, fmt::format("{} takes {} only", path, allow));
    res.set(http::field::allow, allow);
    ex->reply(std::move(res));
  };
  if (path == "/health") {
    if (!get) return method_not_allowed("GET");
    return ex->reply(make_response(req, http::status::ok, "{\"status\":\"ok\"}\n"));
  }
  if (path == "/" || path == "/index.html") {  // static, no data: a browser cannot send a bearer token here
    if (!get) return method_not_allowed("GET");
    return ex->reply(make_response(req, http::status::ok, kIndexHtml, "text/html; charset=utf-8"));
  }
  if (!opt_.api_key.empty()) {
    const auto auth = req.find(http::field::authorization);
    const std::string given = auth == req.end() ? "" : std::string(auth->value());
    if (!same_secret(given, "Bearer " + opt_.api_key)) {
      HttpResponse res = error_response(req, 401, auth == req.end() ? "this server needs an API key: send "
                                                                      "'Authorization: Bearer KEY'"
                                                                    : "the API key is not valid",
                                        "authentication_error");
      res.set(http::field::www_authenticate, "Bearer");
      return ex->reply(std::move(res));
    }
  }
  if (path == "/ready") {
    if (!get) return method_not_allowed("GET");
    std::lock_guard<std::mutex> lk(mu_);
    const char* st = state_ == State::Failed ? "failed" : state_ == State::Draining ? "draining"
                                                         : ready_ ? "ready" : "warming up";
    return ex->reply(make_response(req, ready_ && state_ == State::Serving ? http::status::ok : http::status::service_unavailable,
                                   fmt::format("{{\"status\":\"{}\"}}\n", st)));
  }
  if (path == "/metrics") {
    if (!get) return method_not_allowed("GET");
    for (size_t i = 0; i < replicas_.size(); ++i) metrics_.set_replica(static_cast<int>(i), replicas_[i]->gauges());
    return ex->reply(make_response(req, http::status::ok, metrics_.text(), "text/plain; version=0.0.4; charset=utf-8"));
  }
  if (path == "/v1/models") {
    if (!get) return method_not_allowed("GET");
    return ex->reply(make_response(req, http::status::ok, models_body(model_, opt_.kv, opt_.api)));
  }
  if (path == "/v1/images/generations") {
    if (req.method() != http::verb::post) return method_not_allowed("POST");
    return generate(req, std::move(ex));
  }
  ex->reply(error_response(req, 404, fmt::format("no such endpoint {}; the endpoints are POST /v1/images/generations, GET "
                                                 "/v1/models, /health, /ready, /metrics and / (the web page)", path)));
}

int Frontend::pick_replica(const std::vector<ReplicaGauges>& gauges) {
  // The replica that can admit it soonest: the fewest requests queued, then the least KV reserved (as a
  // share of its cap). Replicas are alike, so their queues drain at the same pace.
  int best = 0;
  double best_key = 0;
  for (size_t i = 0; i < gauges.size(); ++i) {
    const ReplicaGauges& g = gauges[i];
    const double key = static_cast<double>(g.waiting) +
                       (g.kv_capacity > 0 ? static_cast<double>(g.kv_reserved) / static_cast<double>(g.kv_capacity) : 0.0);
    if (i == 0 || key < best_key) {
      best = static_cast<int>(i);
      best_key = key;
    }
  }
  return best;
}

void Frontend::generate(const HttpRequest& req, std::shared_ptr<HttpExchange> ex) {
  auto job = std::make_shared<Job>();
  job->arrived = now_seconds();
  try {
    job->req = parse_image_request(req.body(), model_, opt_.api, opt_.kv);
  } catch (const ApiError& e) {
    metrics_.rejected("invalid");
    return ex->reply(error_response(req, e.status, e.what(), e.type, e.param));
  }
  EngineRequest& er = job->engine;
  er.labels = job->req.labels;
  if (model_.text()) er.texts.assign(static_cast<size_t>(job->req.n), job->req.prompt);
  er.h_div_w = model_.size(job->req.size).h_div_w;
  for (int j = 0; j < job->req.n; ++j) er.image_ids.push_back(static_cast<uint32_t>(j));
  er.seed = job->req.seed;
  er.cfg = job->req.cfg;
  er.top_k = job->req.top_k;
  er.top_p = job->req.top_p;
  er.kv = job->req.kv;
  er.previews = job->req.previews;
  job->head = req;
  job->head.body().clear();
  job->ex = ex;

  std::unique_lock<std::mutex> lk(mu_);
  if (state_ != State::Serving) {
    const bool failed = state_ == State::Failed;
    metrics_.rejected(failed ? "unavailable" : "draining");
    lk.unlock();
    return ex->reply(error_response(req, 503, failed ? "the server failed and is stopping: " + failure_
                                                     : "the server is shutting down and takes no new requests",
                                    "server_error"));
  }
  std::vector<ReplicaGauges> gauges;  // read once: the queue bound and the choice of replica
  int64_t waiting = 0;
  for (auto* r : replicas_) {
    gauges.push_back(r->gauges());
    waiting += gauges.back().waiting;
  }
  if (waiting >= opt_.max_queue) {
    metrics_.rejected("queue_full");
    HttpResponse res = error_response(req, 429, fmt::format("the queue is full ({} requests waiting, --max-queue {}); "
                                                            "retry later", waiting, opt_.max_queue),
                                      "rate_limit_error");
    res.set(http::field::retry_after, std::to_string(std::max(1, static_cast<int>(std::ceil(mean_latency_)))));
    lk.unlock();
    return ex->reply(std::move(res));
  }
  job->id = next_id_++;
  er.id = job->id;
  job->replica = pick_replica(gauges);
  std::string why;
  try {
    why = replicas_[static_cast<size_t>(job->replica)]->never_fits(er);  // builds the policy: checks the budget
  } catch (const Error& e) {
    std::string msg = e.message();
    for (size_t at = 0; (at = msg.find("--kv-budget", at)) != std::string::npos; at += 9) msg.replace(at, 11, "kv_budget");
    metrics_.rejected("invalid");
    lk.unlock();
    return ex->reply(error_response(req, 400, msg, "invalid_request_error", "kv_budget"));
  }
  if (!why.empty()) {
    metrics_.rejected("never_fits");
    lk.unlock();
    return ex->reply(error_response(req, 400, fmt::format("this request can never run on this server ({} with kv_policy "
                                                          "{}): {}", job->req.n == 1 ? "1 image" : fmt::format("{} images", job->req.n),
                                                          er.kv.policy, why), "invalid_request_error", "n"));
  }
  const int64_t id = job->id;
  if (job->req.stream) ex->start_events();  // before anything else can be sent on it
  ex->on_disconnect([this, id] { cancel_job(id, "disconnect"); });
  jobs_[id] = job;
  lk.unlock();
  try {
    replicas_[static_cast<size_t>(job->replica)]->submit(er);
  } catch (const std::exception& e) {
    {
      std::lock_guard<std::mutex> lk2(mu_);
      if (jobs_.erase(id) == 0) return;  // answered already (a drain timeout, a failure)
    }
    cv_.notify_all();
    maybe_close_engines();
    metrics_.rejected("unavailable");
    const auto* err = dynamic_cast<const Error*>(&e);
    answer_error(*job, err ? err->message() : e.what());
  }
}

std::shared_ptr<Frontend::Job> Frontend::take_job(int64_t id) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return nullptr;
  std::shared_ptr<Job> job = std::move(it->second);
  jobs_.erase(it);
  return job;
}

void Frontend::cancel_job(int64_t id, const std::string& cause) {
  const std::shared_ptr<Job> job = take_job(id);
  if (!job) return;
  replicas_[static_cast<size_t>(job->replica)]->cancel(id);
  metrics_.cancelled(cause);
  cv_.notify_all();
  maybe_close_engines();
}

nlohmann::json Frontend::scalekv_fields(const Job& job, const EngineResult& r) const {
  json f = {{"id", job.id},
            {"replica", job.replica},
            {"seed", job.req.seed},
            {"policy", job.req.kv.policy},
            {"budget", job.req.kv.policy == "full" ? "" : (job.req.kv.budget.empty() ? "10%" : job.req.kv.budget)},
            {"seconds", r.finished - job.arrived},
            {"queue_seconds", std::max(0.0, r.admitted - job.arrived)},
            {"kv_peak_bytes", r.gen.kv_peak_bytes},
            {"kv_planned_peak_bytes", r.gen.kv_planned_peak_bytes},
            {"max_batch", r.steps_in_batch_max},  // the most requests it shared a scale step with (itself included)
            {"width", r.width},
            {"height", r.height}};
  if (model_.text())
    f["prompt"] = job.req.prompt;
  else
    f["class_labels"] = job.req.labels;
  return f;
}

void Frontend::deliver(int, EngineResult&& r) {
  const std::shared_ptr<Job> job = take_job(r.id);
  if (!job) return;  // cancelled: its client has gone
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!job->ex) {
      if (!r.cancelled && --warmups_left_ == 0) ready_ = true;
    } else if (!r.cancelled) {
      mean_latency_ = 0.9 * mean_latency_ + 0.1 * (now_seconds() - job->arrived);
    }
  }
  if (!job->ex) {  // a warm-up
    cv_.notify_all();
    maybe_close_engines();
    return;
  }
  if (!r.cancelled) metrics_.finished(std::max(0.0, r.admitted - job->arrived), now_seconds() - job->arrived, job->req.n);
  // PNG encoding off the engine's thread.
  auto shared = std::make_shared<EngineResult>(std::move(r));
  ++answers_in_progress_;
  job->ex->post([this, job, shared] {  // on the connection's strand: after its previews
    try {
      finish_job(job, std::move(*shared));
    } catch (const std::exception& e) {
      job->ex->reply(error_response(job->head, 500, std::string("internal error: ") + e.what(), "server_error"));
      job->ex->end_events();
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      --answers_in_progress_;
    }
    cv_.notify_all();
  });
}

void Frontend::finish_job(std::shared_ptr<Job> job, EngineResult&& r) {
  auto& ex = *job->ex;
  if (r.cancelled) {
    answer_error(*job, "the request was cancelled by the server");
  } else if (job->req.stream) {
    for (size_t j = 0; j < r.rgb.size(); ++j) {
      json e = {{"type", "image_generation.completed"},
                {"b64_json", png_b64(r.rgb[j], r.width, r.height)},
                {"image_index", j},
                {"created_at", static_cast<int64_t>(std::time(nullptr))},
                {"size", fmt::format("{}x{}", r.width, r.height)},
                {"output_format", "png"},
                {"scalekv", scalekv_fields(*job, r)}};
      ex.send_event("image_generation.completed", e.dump());
    }
    ex.end_events();
  } else {
    json body = {{"created", static_cast<int64_t>(std::time(nullptr))}, {"data", json::array()}};
    for (const auto& img : r.rgb) body["data"].push_back({{"b64_json", png_b64(img, r.width, r.height)}});
    body["scalekv"] = scalekv_fields(*job, r);
    ex.reply(make_response(job->head, http::status::ok, body.dump() + "\n"));
  }
  cv_.notify_all();
  maybe_close_engines();
}

void Frontend::preview(int, const EngineOptions::Preview& p) {
  std::shared_ptr<Job> job;
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = jobs_.find(p.id);
    if (it == jobs_.end() || !it->second->ex) return;
    job = it->second;
  }
  auto pv = std::make_shared<EngineOptions::Preview>(p);
  job->ex->post([this, job, pv] {  // on the connection's strand: in scale order, before the final image
    const Schedule& sched = model_.size(job->req.size).schedule;
    const int64_t total = sched.total();
    const int64_t done = pv->scales_done >= sched.num_scales() ? total : sched.offset(pv->scales_done);
    for (size_t j = 0; j < pv->rgb.size(); ++j) {
      json e = {{"type", "image_generation.partial_image"},
                {"b64_json", png_b64(pv->rgb[j], pv->width, pv->height)},
                {"partial_image_index", pv->scales_done - 1},
                {"image_index", j},
                {"scale", pv->scales_done - 1},
                {"scales_done", pv->scales_done},
                {"num_scales", pv->num_scales},
                {"tokens_done", done},
                {"tokens_total", total},
                {"created_at", static_cast<int64_t>(std::time(nullptr))}};
      job->ex->send_event("image_generation.partial_image", e.dump());
    }
  });
}

void Frontend::refused(int, int64_t id, const std::string& why) {
  const std::shared_ptr<Job> job = take_job(id);
  if (!job) return;
  metrics_.rejected("unavailable");
  if (job->ex) answer_error(*job, "the replica could not take the request: " + why);
  cv_.notify_all();
  maybe_close_engines();
}

void Frontend::step(int, double seconds) { metrics_.step(seconds); }

void Frontend::drain(const std::string& why) {
  std::lock_guard<std::mutex> guard(mu_);
  if (state_ != State::Serving) return;
  state_ = State::Draining;
  fmt::print(stderr, "scalekv serve: {}: draining (new requests get 503; in-flight ones have {} s)\n", why,
             opt_.drain_timeout_s);
  http_->close_listener();
  drain_thread_ = std::thread([this] {
    std::unique_lock<std::mutex> lk(mu_);
    auto clients_left = [&] {
      return std::any_of(jobs_.begin(), jobs_.end(), [](const auto& kv) { return kv.second->ex != nullptr; });
    };
    const bool empty = cv_.wait_for(lk, std::chrono::duration<double>(opt_.drain_timeout_s), [&] {
      return !clients_left() || state_ == State::Failed;
    });
    std::vector<std::shared_ptr<Job>> left;
    if (!empty) {  // the drain timeout: what is left is cancelled, and its client told so
      for (auto it = jobs_.begin(); it != jobs_.end();)
        if (it->second->ex) {
          left.push_back(it->second);
          it = jobs_.erase(it);
        } else {
          ++it;
        }
    }
    lk.unlock();
    if (!left.empty()) fmt::print(stderr, "scalekv serve: drain timeout: cancelling {} request(s)\n", left.size());
    for (const auto& job : left) {
      replicas_[static_cast<size_t>(job->replica)]->cancel(job->id);
      metrics_.cancelled("shutdown");
      answer_error(*job, "the request was cancelled: the server is shutting down (drain timeout)");
    }
    maybe_close_engines();
  });
}

void Frontend::maybe_close_engines() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (engines_closed_ || state_ == State::Serving) return;
    if (std::any_of(jobs_.begin(), jobs_.end(), [](const auto& kv) { return kv.second->ex != nullptr; })) return;
    engines_closed_ = true;
  }
  for (auto* r : replicas_) r->close();
}

void Frontend::fail(const std::string& why) {
  std::map<int64_t, std::shared_ptr<Job>> jobs;
  {
    std::lock_guard<std::mutex> lk(mu_);
    state_ = State::Failed;
    failure_ = why;
    jobs.swap(jobs_);
    engines_closed_ = true;
  }
  http_->close_listener();
  for (auto* r : replicas_) r->close();
  for (auto& [id, job] : jobs) {
    if (job->ex) answer_error(*job, "the server failed and is stopping: " + why);
  }
  cv_.notify_all();
}

void Frontend::stop() {
  std::thread drain;
  {
    std::unique_lock<std::mutex> lk(mu_);
    if (state_ == State::Serving) state_ = State::Draining;
    // Answers being encoded and written (their jobs have left jobs_) go out first.
    cv_.wait_for(lk, std::chrono::seconds(10), [&] { return answers_in_progress_ == 0; });
    drain.swap(drain_thread_);
  }
  cv_.notify_all();
  if (drain.joinable()) drain.join();
  http_->stop(2.0);
}

}  // namespace skv
