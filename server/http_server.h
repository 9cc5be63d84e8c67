// http_server.h - a small HTTP/1.1 server on Boost.Beast / Boost.Asio: keep-alive, a body limit (413), a
// read deadline for slow or stalled clients (408), a write deadline for clients that stop reading,
// Server-Sent Events, and disconnect detection while a response is pending (the client's request is
// cancelled when it goes away). It knows nothing about images: every request goes to one Handler, on an
// I/O thread, which must not block - it answers at once or keeps the Exchange and answers later from any
// thread (model work runs on the engine's thread). Modelled on Beast's advanced server example (one strand
// per connection, async reads and writes).
//
// When is a client gone? While an answer is pending the session watches the socket:
//  - an error on it (RST: the client closed with our data unread, or the network failed), or a write that
//    fails (EPIPE, ECONNRESET), is a disconnect: the handler hears it through on_disconnect();
//  - end of stream (the client sent FIN) is NOT a disconnect by itself. A client that half-closes
//    (shutdown(SHUT_WR) after its request: some clients do) still reads its answer, and from this side it
//    looks exactly like one that closed the socket: both arrive as a FIN, and nothing in TCP tells them
//    apart until we send something. So after a FIN the session sends a probe that a reading client
//    ignores - on an event stream an SSE comment line (":"), on a pending HTTP/1.1 answer an interim
//    "HTTP/1.1 100 Continue" response (RFC 9110 15.2: a client must accept 1xx responses before the final
//    one; curl, Python's http.client, Go and browsers skip them) - and keeps watching for an error. A
//    client that closed its socket (or shut down its reading side) answers the probe with an RST, seen
//    here within a round trip: a disconnect, as before. A half-closed client reads the probe and gets its
//    answer. HTTP/1.0 forbids 1xx responses, so an HTTP/1.0 client that sends FIN is not probed: its
//    request runs to completion, and only a failed write would cancel it (the cost: a fully closed
//    HTTP/1.0 client's request is not cancelled early).
//  - a write that makes no progress for write_timeout_s (a client that stopped reading, its socket
//    buffers full), or an event stream whose unsent events pass max_queued_bytes (a client that reads
//    slower than the events come), ends the connection with a reset (its unsent bytes are dropped, in
//    our queue and the kernel's) and counts as a disconnect.
#pragma once

#include <boost/beast/http.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace skv {

namespace http = boost::beast::http;
using HttpRequest = http::request<http::string_body>;
using HttpResponse = http::response<http::string_body>;

struct HttpLimits {
  size_t max_body_bytes = 64 * 1024;   // larger bodies get 413
  size_t max_header_bytes = 16 * 1024;
  double read_timeout_s = 10;          // a request not complete this long after its first byte gets 408
  double idle_timeout_s = 60;          // a connection with no request this long is closed
  double write_timeout_s = 30;         // a write with no progress this long ends the connection (a disconnect)
  size_t max_queued_bytes = 64 << 20;  // unsent SSE events over this end the connection (a disconnect)
};

// One request's answer channel. Thread-safe: reply() and the SSE calls may come from any thread; they
// are carried out on the connection's strand. Exactly one of reply() or start_events() is used.
class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  virtual void reply(HttpResponse res) = 0;
  // Starts a text/event-stream response (HTTP/1.1, ended by closing the connection).
  virtual void start_events() = 0;
  // One event: "event: NAME\ndata: DATA\n\n" (a trailing newline dropped; a line of DATA per data: line).
  virtual void send_event(const std::string& name, const std::string& data) = 0;
  // Sends what is queued, then closes the connection.
  virtual void end_events() = 0;
  // Called once, on an I/O thread, if the client goes away before the answer is complete (it closed the
  // connection while waiting, a write failed or timed out; see the top of this file). Set it before the
  // exchange can be answered.
  virtual void on_disconnect(std::function<void()> fn) = 0;
  // Runs fn on this connection's strand, after what was posted before: a job's previews and final image
  // are encoded and sent in order.
  virtual void post(std::function<void()> fn) = 0;
};

using HttpHandler = std::function<void(const HttpRequest& req, std::shared_ptr<HttpExchange> ex)>;

// A response with a body and the usual headers (Server, Content-Type, Content-Length, keep-alive as asked).
HttpResponse make_response(const HttpRequest& req, http::status status, std::string body,
                           const std::string& content_type = "application/json");

class HttpServer {
 public:
  // Binds host:port (port 0: a free one, see port()); throws with a one-line reason when it cannot.
  HttpServer(const std::string& host, int port, HttpLimits limits, HttpHandler handler);
  ~HttpServer();
  int port() const;
  // Runs the I/O threads (returns at once).
  void start(int threads);
  // Stops accepting; open connections finish what they are doing.
  void close_listener();
  // Calls fn on an I/O thread when one of the signals arrives (SIGTERM, SIGINT, SIGUSR1...).
  void on_signals(const std::vector<int>& signals, std::function<void(int)> fn);
  // Stops the I/O threads (after giving open writes up to `grace_s` to finish) and joins them.
  void stop(double grace_s = 1.0);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace skv
