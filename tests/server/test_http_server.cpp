// The HTTP server's connection rules (server/http_server.h) on loopback, without a model: a client that
// stops reading is reset after the write timeout, an event stream whose unsent events pass the bound is
// reset at once, a half-closed client gets its answer (HTTP/1.1 after a 100 Continue probe, HTTP/1.0
// without one), and a client that closes while its answer is pending is a disconnect.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "server/http_server.h"

namespace skv {

namespace {

using namespace std::chrono_literals;

// What the handler saw: the last exchange it kept, and whether its client went away.
struct Seen {
  std::mutex mu;
  std::condition_variable cv;
  std::shared_ptr<HttpExchange> ex;
  HttpRequest req;
  bool gone = false;

  bool wait_gone(std::chrono::milliseconds within) {
    std::unique_lock<std::mutex> lk(mu);
    return cv.wait_for(lk, within, [&] { return gone; });
  }
  std::shared_ptr<HttpExchange> wait_exchange() {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait_for(lk, 5s, [&] { return ex != nullptr; });
    return ex;
  }
};

// /events: an event stream of 64 events of 64 KiB, queued at once. /later: answered by the test.
std::unique_ptr<HttpServer> serve(HttpLimits limits, Seen& seen) {
  auto s = std::make_unique<HttpServer>("127.0.0.1", 0, limits, [&seen](const HttpRequest& req,
                                                                        std::shared_ptr<HttpExchange> ex) {
    ex->on_disconnect([&seen] {
      std::lock_guard<std::mutex> lk(seen.mu);
      seen.gone = true;
      seen.cv.notify_all();
    });
    if (req.target() == "/events") {
      ex->start_events();
      for (int i = 0; i < 64; ++i) ex->send_event("blob", std::string(64 * 1024, 'x'));
    }
    std::lock_guard<std::mutex> lk(seen.mu);
    seen.ex = ex;
    seen.req = req;
    seen.cv.notify_all();
  });
  s->start(2);
  return s;
}

// A server and what its handler saw; the kept exchange goes before the server's I/O context does.
struct Harness {
  Seen seen;
  std::unique_ptr<HttpServer> server;
  explicit Harness(HttpLimits limits) : server(serve(limits, seen)) {}
  ~Harness() {
    server->stop(0);
    std::lock_guard<std::mutex> lk(seen.mu);
    seen.ex.reset();
  }
  int port() const { return server->port(); }
  HttpRequest request() {
    std::lock_guard<std::mutex> lk(seen.mu);
    return seen.req;
  }
};

// A loopback client; `slow`: a tiny receive window and MSS, so the server's writes stall after tens of KB.
int connect_to(int port, bool slow = false) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (slow) {
    const int rcv = 1024, mss = 536;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    ::setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof mss);
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  return fd;
}

void send_all(int fd, const std::string& s) {
  for (size_t at = 0; at < s.size();) {
    const ssize_t n = ::send(fd, s.data() + at, s.size() - at, MSG_NOSIGNAL);
    ASSERT_GT(n, 0);
    at += static_cast<size_t>(n);
  }
}

// Reads until EOF, an error (*err: its errno) or `within` without a byte.
std::string read_all(int fd, int* err, std::chrono::milliseconds within = 5000ms) {
  std::string out;
  *err = 0;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(within.count())) != 1) {
      *err = ETIMEDOUT;
      return out;
    }
    char buf[65536];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0) return out;
    if (n < 0) {
      *err = errno;
      return out;
    }
    out.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace

TEST(HttpServer, AClientThatStopsReadingIsResetAfterTheWriteTimeout) {
  HttpLimits lim;
  lim.write_timeout_s = 0.5;
  Harness h(lim);
  Seen& seen = h.seen;
  const int fd = connect_to(h.port(), true);
  send_all(fd, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n");
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(seen.wait_gone(10s)) << "a client that reads nothing was not ended";
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 400ms);  // not before the timeout
  int err = 0;
  const std::string got = read_all(fd, &err);
  EXPECT_EQ(err, ECONNRESET) << "got " << got.size() << " bytes, then errno " << err;
  EXPECT_LT(got.size(), 64u * 64 * 1024);
  ::close(fd);
}

TEST(HttpServer, UnsentEventsOverTheBoundEndTheConnectionAtOnce) {
  HttpLimits lim;
  lim.write_timeout_s = 100;  // not the write timeout: the bound
  lim.max_queued_bytes = 256 * 1024;
  Harness h(lim);
  Seen& seen = h.seen;
  const int fd = connect_to(h.port(), true);
  send_all(fd, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(seen.wait_gone(5s)) << "4 MiB of events queued over a bound of 256 KiB";
  ::close(fd);
}

TEST(HttpServer, AReadingClientGetsEveryEvent) {  // (the bound counts unsent bytes only)
  HttpLimits lim;
  lim.max_queued_bytes = 8 << 20;
  Harness h(lim);
  Seen& seen = h.seen;
  const int fd = connect_to(h.port());
  send_all(fd, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n");
  seen.wait_exchange()->end_events();
  int err = 0;
  const std::string got = read_all(fd, &err);
  EXPECT_EQ(err, 0);
  EXPECT_EQ(got.rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
  size_t events = 0;
  for (size_t at = 0; (at = got.find("event: blob\n", at)) != std::string::npos; ++at) ++events;
  EXPECT_EQ(events, 64u);
  EXPECT_FALSE(seen.gone);
  ::close(fd);
}

TEST(HttpServer, AHalfClosedClientGetsItsAnswer) {
  Harness h(HttpLimits{});
  Seen& seen = h.seen;
  const int fd = connect_to(h.port());
  send_all(fd, "GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_EQ(::shutdown(fd, SHUT_WR), 0);  // FIN: done sending, still reading
  auto ex = seen.wait_exchange();
  ASSERT_TRUE(ex);
  std::this_thread::sleep_for(300ms);  // the server sees the FIN and probes before the answer
  EXPECT_FALSE(seen.gone) << "a half-closed client was taken as gone";
  ex->reply(make_response(h.request(), http::status::ok, "the answer\n", "text/plain"));
  int err = 0;
  const std::string got = read_all(fd, &err);
  EXPECT_EQ(err, 0);
  EXPECT_EQ(got.rfind("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n", 0), 0u) << got;
  EXPECT_NE(got.find("\r\n\r\nthe answer\n"), std::string::npos) << got;
  EXPECT_FALSE(seen.gone);
  ::close(fd);
}

TEST(HttpServer, AHalfClosedHttp10ClientGetsItsAnswerWithoutAnInterimResponse) {
  Harness h(HttpLimits{});
  Seen& seen = h.seen;
  const int fd = connect_to(h.port());
  send_all(fd, "GET /later HTTP/1.0\r\n\r\n");
  ASSERT_EQ(::shutdown(fd, SHUT_WR), 0);
  auto ex = seen.wait_exchange();
  ASSERT_TRUE(ex);
  std::this_thread::sleep_for(300ms);
  ex->reply(make_response(h.request(), http::status::ok, "the answer\n", "text/plain"));
  int err = 0;
  const std::string got = read_all(fd, &err);
  EXPECT_EQ(got.rfind("HTTP/1.0 200 OK\r\n", 0), 0u) << got;  // HTTP/1.0 has no 1xx
  EXPECT_FALSE(seen.gone);
  ::close(fd);
}

TEST(HttpServer, AClientThatClosesWhileItsAnswerIsPendingIsGone) {
  for (const char* version : {"1.1", "1.0"}) {
    SCOPED_TRACE(version);
    Harness h(HttpLimits{});
    Seen& seen = h.seen;
    const int fd = connect_to(h.port());
    send_all(fd, std::string("GET /later HTTP/") + version + "\r\nHost: x\r\n\r\n");
    ASSERT_TRUE(seen.wait_exchange());
    ::close(fd);  // a FIN, like a half-close; it answers the server's probe with a reset
    if (std::string(version) == "1.1") {
      EXPECT_TRUE(seen.wait_gone(5s)) << "a closed client was not seen as gone";
    } else {  // not probed (HTTP/1.0 has no 1xx): kept until a write fails (http_server.h)
      EXPECT_FALSE(seen.wait_gone(500ms));
    }
  }
}

}  // namespace skv
