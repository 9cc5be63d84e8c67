// http_server.cpp - see http_server.h. One Session per connection; everything a session does runs on
// its strand, so its state needs no lock. While a request waits for its answer, the session watches the
// socket (async_wait for readability, then a 1-byte MSG_PEEK): an error there means the client went away,
// which the handler hears through on_disconnect(); end of stream is probed first (http_server.h). Every
// byte goes out through one queue, a write_some at a time, each under the write deadline.
#include "server/http_server.h"

#include <boost/asio.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/beast/core.hpp>
#include <fmt/core.h>

#include <nlohmann/json.hpp>
#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <csignal>
#include <chrono>
#include <deque>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "runtime/check.h"

namespace skv {

namespace net = boost::asio;
namespace beast = boost::beast;
using tcp = net::ip::tcp;

namespace {

struct Shared {
  HttpLimits limits;
  HttpHandler handler;
  std::atomic<int64_t> connections{0};
  std::atomic<bool> closing{false};  // the listener closed: answers end their connections
};

class Session final : public HttpExchange, public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket sock, std::shared_ptr<Shared> sh)
      : sock_(std::move(sock)), timer_(sock_.get_executor()), wtimer_(sock_.get_executor()), sh_(std::move(sh)) {
    ++sh_->connections;
  }
  ~Session() override { --sh_->connections; }

  void start() {
    beast::error_code ignore;
    sock_.non_blocking(true, ignore);  // the watch's peek must never block the strand (async_wait may wake early)
    net::dispatch(sock_.get_executor(), [self = shared_from_this()] { self->do_read(); });
  }

  void reply(HttpResponse res) override {
    net::post(sock_.get_executor(), [self = shared_from_this(), r = std::move(res)]() mutable {
      self->do_reply(std::move(r));
    });
  }
  void start_events() override {
    net::post(sock_.get_executor(), [self = shared_from_this()] {
      if (self->closed_ || !self->answering_ || self->events_) return;
      self->events_ = true;
      self->queue(
          "HTTP/1.1 200 OK\r\nServer: scalekv\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
          "X-Accel-Buffering: no\r\nConnection: close\r\n\r\n");
    });
  }
  void send_event(const std::string& name, const std::string& data) override {
    std::string ev = fmt::format("event: {}\n", name);
    std::string d = data;
    while (!d.empty() && d.back() == '\n') d.pop_back();
    for (size_t a = 0;;) {  // one data: line per line of the data
      const size_t b = d.find('\n', a);
      ev += "data: " + d.substr(a, b == std::string::npos ? std::string::npos : b - a) + "\n";
      if (b == std::string::npos) break;
      a = b + 1;
    }
    ev += "\n";
    net::post(sock_.get_executor(), [self = shared_from_this(), e = std::move(ev)]() mutable {
      if (self->closed_) return;
      // A client that reads slower than its events come: end it rather than queue without bound.
      if (self->out_bytes_ + e.size() > self->sh_->limits.max_queued_bytes) return self->reset();
      self->queue(std::move(e));
    });
  }
  void end_events() override {
    net::post(sock_.get_executor(), [self = shared_from_this()] {
      self->end_after_ = true;
      self->write_next();  // closes once the queue is empty
    });
  }
  void on_disconnect(std::function<void()> fn) override {
    std::lock_guard<std::mutex> lk(mu_);
    on_gone_ = std::move(fn);
  }
  void post(std::function<void()> fn) override { net::post(sock_.get_executor(), std::move(fn)); }

 private:
  // After the queued bytes of an answer are written: read the next request, close, or linger then close.
  enum class Then { Nothing, ReadNext, Close, Linger };

  void arm_timer(double seconds, bool reading) {
    reading_ = reading;
    timer_.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(seconds)));
    timer_.async_wait([self = shared_from_this(), gen = ++timer_gen_](beast::error_code ec) {
      if (ec || gen != self->timer_gen_ || self->closed_ || self->answering_) return;
      if (!self->reading_) return self->close();  // an idle keep-alive connection
      self->timed_out_ = true;
      beast::error_code ignore;
      self->sock_.cancel(ignore);  // the pending read ends with operation_aborted
    });
  }

  // Waits (idle timeout) for the next request's first byte, then reads it (read timeout).
  void do_read() {
    if (closed_) return;
    parser_.emplace();
    parser_->body_limit(sh_->limits.max_body_bytes);
    parser_->header_limit(static_cast<uint32_t>(sh_->limits.max_header_bytes));
    timed_out_ = false;
    if (buf_.size() > 0) return start_read();  // pipelined: its bytes are here
    arm_timer(sh_->limits.idle_timeout_s, false);
    sock_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](beast::error_code ec) {
      if (self->closed_) return;
      if (ec) return self->close();
      self->start_read();
    });
  }

  void start_read() {
    arm_timer(sh_->limits.read_timeout_s, true);
    http::async_read(sock_, buf_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->on_read(ec);
    });
  }

  void on_read(beast::error_code ec) {
    ++timer_gen_;  // the timer's pending wake-up (if any) is stale now
    timer_.cancel();
    const bool some = parser_->got_some() || buf_.size() > 0;
    if (timed_out_ && ec) {  // a stalled request gets 408
      if (some) return fail_request(http::status::request_timeout, "the request was not complete within the read timeout");
      return close();
    }
    if (ec == http::error::end_of_stream || ec == net::error::connection_reset || ec == net::error::eof ||
        ec == net::error::operation_aborted)
      return close();
    if (ec == http::error::body_limit)
      return fail_request(http::status::payload_too_large,
                          fmt::format("the request body is over the limit of {} bytes", sh_->limits.max_body_bytes));
    if (ec == http::error::header_limit)
      return fail_request(http::status::request_header_fields_too_large,
                          fmt::format("the request headers are over the limit of {} bytes", sh_->limits.max_header_bytes));
    if (ec) return fail_request(http::status::bad_request, fmt::format("malformed HTTP request: {}", ec.message()));
    HttpRequest req = parser_->release();
    keep_alive_ = req.keep_alive();
    http10_ = req.version() < 11;
    peer_eof_ = false;
    answering_ = true;
    watch();
    try {
      sh_->handler(req, shared_from_this());
    } catch (const std::exception& e) {
      do_reply(make_response(req, http::status::internal_server_error, error_json(std::string("internal error: ") + e.what(), "server_error")));
    }
  }

  static std::string error_json(const std::string& message, const char* type) {
    return nlohmann::json{{"error", {{"message", message}, {"type", type}}}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  }

  // An answer to a request that could not be read: JSON error, then the connection closes (lingering:
  // what the client is still sending is read and dropped, so the answer is not lost to a TCP reset).
  void fail_request(http::status st, const std::string& message) {
    HttpResponse res{st, 11};
    res.set(http::field::server, "scalekv");
    res.set(http::field::content_type, "application/json");
    res.body() = error_json(message, "invalid_request_error");
    res.prepare_payload();
    keep_alive_ = false;
    answering_ = true;
    linger_ = true;
    do_reply(std::move(res));
  }

  // While an answer is pending: does the client go away? (The rule is at the top of http_server.h.)
  void watch() {
    sock_.async_wait(tcp::socket::wait_read, [self = shared_from_this(), gen = watch_gen_](beast::error_code ec) {
      if (gen != self->watch_gen_ || !self->answering_ || self->closed_ || ec == net::error::operation_aborted) return;
      char c;
      beast::error_code e2;
      const size_t n = ec ? 0 : self->sock_.receive(net::buffer(&c, 1), tcp::socket::message_peek, e2);
      if (e2 == net::error::would_block || e2 == net::error::try_again) return self->watch();  // woke early
      if (ec || (e2 && e2 != net::error::eof)) return self->gone();  // an RST or another error: gone
      if (n > 0) return;  // the client pipelined its next request: it is read after this answer
      self->peer_eof();
    });
  }

  // The client sent FIN: it half-closed (it still reads) or closed. Probe it: a closed socket answers the
  // probe with an RST, which the error watch sees; a half-closed client skips the probe.
  void peer_eof() {
    peer_eof_ = true;
    if (events_)
      queue(":\n\n");  // an SSE comment
    else if (!http10_)
      queue("HTTP/1.1 100 Continue\r\n\r\n");  // an interim response (HTTP/1.1 only)
    watch_error();
  }

  void watch_error() {
    sock_.async_wait(tcp::socket::wait_error, [self = shared_from_this(), gen = watch_gen_](beast::error_code ec) {
      if (gen != self->watch_gen_ || !self->answering_ || self->closed_ || ec == net::error::operation_aborted) return;
      if (ec) return self->gone();
      const int fd = self->sock_.native_handle();
      pollfd p{fd, POLLIN, 0};  // the socket is readable (at EOF): is it also failed?
      if (::poll(&p, 1, 0) == 1 && (p.revents & (POLLERR | POLLHUP))) return self->gone();
      // Woke for urgent data: drop it (else it wakes us again at once). Should wake-ups keep coming
      // anyway, stop watching: a failed write still tells.
      char c;
      (void)::recv(fd, &c, 1, MSG_OOB | MSG_DONTWAIT);
      if (++self->spurious_wakes_ <= 16) self->watch_error();
    });
  }

  void gone() {
    if (gone_.exchange(true)) return;
    std::function<void()> fn;
    {
      std::lock_guard<std::mutex> lk(mu_);
      fn = std::move(on_gone_);
    }
    close();
    if (fn) fn();
  }

  // Ends the connection with an RST, dropping what is unsent (ours and the kernel's): a client that does
  // not read. A disconnect.
  void reset() {
    beast::error_code ignore;
    sock_.set_option(net::socket_base::linger(true, 0), ignore);
    reset_ = true;
    gone();
  }

  void do_reply(HttpResponse res) {
    if (closed_ || !answering_ || events_) return;
    answering_ = false;
    ++watch_gen_;  // the watch's wake-ups are stale now
    {
      std::lock_guard<std::mutex> lk(mu_);
      on_gone_ = nullptr;  // answered: a later disconnect is no cancellation
    }
    // (The payload headers were set by make_response.) A client that sent FIN sends no next request.
    res.keep_alive(keep_alive_ && !sh_->closing && !peer_eof_);
    then_ = res.need_eof() ? (linger_ ? Then::Linger : Then::Close) : Then::ReadNext;
    std::ostringstream os;
    os << res;
    queue(std::move(os).str());
  }

  // The write queue: the answer, or the event stream's header and events, and probes; one write at a time.
  // A write that makes no progress within the write timeout ends the connection.
  void queue(std::string bytes) {
    if (closed_) return;
    out_bytes_ += bytes.size();
    out_.push_back(std::move(bytes));
    write_next();
  }

  void write_next() {
    if (writing_ || closed_) return;
    if (out_.empty()) return queue_empty();
    writing_ = true;
    wtimer_.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(sh_->limits.write_timeout_s)));
    wtimer_.async_wait([self = shared_from_this(), gen = ++wtimer_gen_](beast::error_code ec) {
      if (ec || gen != self->wtimer_gen_ || self->closed_ || !self->writing_) return;
      self->reset();  // the client stopped reading
    });
    const std::string& front = out_.front();
    sock_.async_write_some(net::buffer(front.data() + out_off_, front.size() - out_off_),
                           [self = shared_from_this()](beast::error_code ec, size_t n) { self->on_write(ec, n); });
  }

  void on_write(beast::error_code ec, size_t n) {
    writing_ = false;
    ++wtimer_gen_;
    wtimer_.cancel();
    if (closed_) {
      clear_queue();
      return;
    }
    if (ec) return gone();  // EPIPE, ECONNRESET...: the client went away
    out_off_ += n;
    out_bytes_ -= n;
    if (out_off_ == out_.front().size()) {
      out_.pop_front();
      out_off_ = 0;
    }
    write_next();
  }

  void queue_empty() {
    if (events_) {
      if (end_after_) close();
      return;
    }
    const Then t = then_;
    then_ = Then::Nothing;
    switch (t) {
      case Then::ReadNext: return do_read();
      case Then::Close: return close();
      case Then::Linger: return linger();
      case Then::Nothing: return;  // a probe went out; the answer is still to come
    }
  }

  void clear_queue() {
    out_.clear();
    out_off_ = 0;
    out_bytes_ = 0;
  }

  // Half-close, then read and drop what still comes for up to a second, then close.
  void linger() {
    beast::error_code ignore;
    sock_.shutdown(tcp::socket::shutdown_send, ignore);
    answering_ = false;
    arm_timer(1.0, false);
    drain_input();
  }
  void drain_input() {
    sock_.async_read_some(net::buffer(sink_), [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec || self->closed_) return self->close();
      self->drain_input();
    });
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    answering_ = false;
    beast::error_code ignore;
    timer_.cancel();
    wtimer_.cancel();
    if (!reset_) sock_.shutdown(tcp::socket::shutdown_both, ignore);
    sock_.close(ignore);
    if (!writing_) clear_queue();  // (a write in flight still points into it: its handler clears it)
  }

  tcp::socket sock_;
  net::steady_timer timer_;   // the idle, read and linger deadlines
  net::steady_timer wtimer_;  // the write deadline
  std::shared_ptr<Shared> sh_;
  beast::flat_buffer buf_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::deque<std::string> out_;  // unsent bytes, in order; the front one is being written from out_off_
  size_t out_off_ = 0, out_bytes_ = 0;
  Then then_ = Then::Nothing;
  bool timed_out_ = false, answering_ = false, events_ = false, writing_ = false, end_after_ = false, closed_ = false;
  bool reading_ = false, linger_ = false, http10_ = false, peer_eof_ = false, reset_ = false;
  uint64_t timer_gen_ = 0;   // a timer wake-up for an earlier arming is ignored
  uint64_t wtimer_gen_ = 0;  // the same for the write deadline
  uint64_t watch_gen_ = 0;   // a watch's wake-up after its request was answered is ignored
  int spurious_wakes_ = 0;   // of the error watch
  std::array<char, 4096> sink_;
  bool keep_alive_ = false;
  std::atomic<bool> gone_{false};
  std::mutex mu_;
  std::function<void()> on_gone_;
};

}  // namespace

HttpResponse make_response(const HttpRequest& req, http::status status, std::string body,
                           const std::string& content_type) {
  HttpResponse res{status, req.version()};
  res.set(http::field::server, "scalekv");
  res.set(http::field::content_type, content_type);
  res.keep_alive(req.keep_alive());
  if (req.method() == http::verb::head) {  // the headers of a GET, no body
    res.content_length(body.size());
    return res;
  }
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

struct HttpServer::Impl {
  net::io_context ioc;
  tcp::acceptor acceptor{net::make_strand(ioc)};
  net::steady_timer accept_timer{acceptor.get_executor()};
  std::shared_ptr<Shared> sh = std::make_shared<Shared>();
  std::vector<std::thread> threads;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  std::unique_ptr<net::signal_set> signals;
  std::function<void(int)> on_signal;
  std::vector<int> signal_numbers;
  int port = 0;

  void accept() {
    acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket sock) {
      if (!acceptor.is_open()) return;
      if (!ec) {
        std::make_shared<Session>(std::move(sock), sh)->start();
        return accept();
      }
      // Out of file descriptors (or another accept error): try again shortly instead of spinning.
      accept_timer.expires_after(std::chrono::milliseconds(100));
      accept_timer.async_wait([this](beast::error_code) { accept(); });
    });
  }
  void wait_signal() {
    signals->async_wait([this](beast::error_code ec, int sig) {
      if (ec) return;
      if (on_signal) on_signal(sig);
      wait_signal();
    });
  }
};

HttpServer::HttpServer(const std::string& host, int port, HttpLimits limits, HttpHandler handler)
    : impl_(std::make_unique<Impl>()) {
  impl_->sh->limits = limits;
  impl_->sh->handler = std::move(handler);
  SKV_CHECK(port >= 0 && port <= 65535, "--port {} must be in [0, 65535] (0: a free port)", port);
  beast::error_code ec;
  const auto addr = net::ip::make_address(host, ec);
  SKV_CHECK(!ec, "--host '{}' is not an IP address ({}); use 127.0.0.1 (loopback) or 0.0.0.0 (every interface)", host,
            ec.message());
  const tcp::endpoint ep{addr, static_cast<unsigned short>(port)};
  auto& a = impl_->acceptor;
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(net::socket_base::max_listen_connections, ec);
  SKV_CHECK(!ec, "cannot listen on {}:{}: {}", host, port, ec.message());
  impl_->port = a.local_endpoint().port();
}

HttpServer::~HttpServer() {
  if (!impl_->threads.empty()) stop(0);
}

int HttpServer::port() const { return impl_->port; }

void HttpServer::start(int threads) {
  impl_->work.emplace(impl_->ioc.get_executor());
  net::dispatch(impl_->acceptor.get_executor(), [this] { impl_->accept(); });
  for (int i = 0; i < std::max(1, threads); ++i)
    impl_->threads.emplace_back([this] {
      for (;;) {
        try {
          impl_->ioc.run();
          return;
        } catch (const std::exception& e) {  // one handler failed: say so, keep serving the others
          std::fprintf(stderr, "scalekv serve: an I/O handler failed: %s\n", e.what());
        }
      }
    });
}

void HttpServer::close_listener() {
  impl_->sh->closing = true;
  net::post(impl_->acceptor.get_executor(), [this] {
    beast::error_code ignore;
    impl_->acceptor.close(ignore);
  });
}

void HttpServer::on_signals(const std::vector<int>& signals, std::function<void(int)> fn) {
  impl_->on_signal = std::move(fn);
  impl_->signals = std::make_unique<net::signal_set>(impl_->ioc);
  for (int s : signals) impl_->signals->add(s);
  impl_->signal_numbers = signals;
  impl_->wait_signal();
}

void HttpServer::stop(double grace_s) {
  close_listener();
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                            std::chrono::duration<double>(grace_s));
  while (impl_->sh->connections > 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (impl_->signals) {  // a second signal while the process ends must not kill it (the drain already ran)
    for (int sig : impl_->signal_numbers) std::signal(sig, SIG_IGN);
    net::post(impl_->ioc, [this] {
      beast::error_code ignore;
      impl_->signals->cancel(ignore);
    });
  }
  impl_->work.reset();
  impl_->ioc.stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
}

}  // namespace skv
