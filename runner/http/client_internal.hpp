// The HTTP client's internals, shared by client.cpp (the client, its
// connections, starting requests) and exchange.cpp (a request's exchange:
// lookup, connection, tunnel, request, response, body reads). Everything
// here is touched on the client's I/O thread only, but what says otherwise
// (Poster, SourcePump, StreamedResponse::State's read guard).
//
// One I/O thread per Client runs an io_context; every request is an Asio
// coroutine on it, so everything a request owns (its connection, parser,
// timers) is touched on that thread only and needs no lock: the thread is
// the requests' strand. A token's cancellation arrives on any thread: the
// CancellableCompleter fails the caller's future right there, and its
// on_cancel hook only posts the teardown (close the socket) to the I/O
// thread, since Asio's objects and cancellation are not thread-safe.
//
// Name lookups: Asio 1.81's resolver runs getaddrinfo on a private thread of
// the io_context that nothing can interrupt, and the io_context's destructor
// joins it; a hung lookup would hold up every later lookup and the client's
// destructor. Each lookup runs on a detached thread of its own instead; the
// request waits for its answer on a timer that the answer (or an abort)
// cancels, and a late answer is dropped. Why not c-ares: it would bypass
// nsswitch (/etc/hosts is read, but not mDNS, LDAP or systemd-resolved's
// NSS module) and add a dependency for something a thread does. Lookups
// run on a few threads per client (runner/http/lookup.hpp).
//
// Where the RFCs leave a choice, the client does what curl does; each such
// place says so.
#pragma once

#include "cancellable/http.hpp"

#include <netdb.h>
#include <pthread.h>
#include <sys/socket.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <openssl/x509v3.h>

#include "cancellable/cancellable_completer.hpp"
#include "cancellable/exceptions.hpp"
#include "cancellable/merged_cancellation_token.hpp"
#include "runner/http/inflater.hpp"
#include "runner/http/lookup.hpp"
#include "runner/http/proxy.hpp"
#include "runner/http/request_check.hpp"
#include "runner/http/url.hpp"

namespace cancellable::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

using detail::iequals;

using detail::Url;

// Saturating: any duration up to milliseconds::max() is "that long", never
// an overflow.
inline Clock::time_point after(Clock::time_point from, std::chrono::milliseconds d) {
  if (d.count() <= 0) return from;
  auto room = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::time_point::max() - from);
  if (d >= room) return Clock::time_point::max();
  return from + std::chrono::duration_cast<Clock::duration>(d);
}
inline std::string describe(std::chrono::milliseconds d) {
  if (d >= std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::hours(24 * 365 * 100)))
    return std::to_string(d.count()) + " ms";
  return format_duration(d);
}

// Base64 (RFC 4648) for Proxy-Authorization: Basic.
inline std::string base64(std::string_view in) {
  static constexpr const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    unsigned v = (unsigned char)in[i] << 16 | (unsigned char)in[i + 1] << 8 | (unsigned char)in[i + 2];
    out += {abc[v >> 18], abc[(v >> 12) & 63], abc[(v >> 6) & 63], abc[v & 63]};
  }
  if (i + 1 == in.size()) {
    unsigned v = (unsigned char)in[i] << 16;
    out += {abc[v >> 18], abc[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    unsigned v = (unsigned char)in[i] << 16 | (unsigned char)in[i + 1] << 8;
    out += {abc[v >> 18], abc[(v >> 12) & 63], abc[(v >> 6) & 63], '='};
  }
  return out;
}

// ---- the I/O side --------------------------------------------------------

// Bytes of the response kept before they are parsed: the status line and
// headers (64 KiB), one chunk-size line with its extensions, the trailer.
// Beast 1.81 bounds none of the last three; the buffer's own limit does (a
// read past it is error::buffer_overflow). Reads are 64 KiB at a time.
constexpr std::size_t kHeaderLimit = 64 * 1024;
constexpr std::size_t kBufferLimit = 256 * 1024;
constexpr std::size_t kReadSize = 64 * 1024;
// The most read_chunk() hands over at once (what has arrived, up to this).
constexpr std::size_t kChunkCap = 1024 * 1024;
// Interim (1xx) responses skipped before the final one.
constexpr int kMaxInterim = 32;

// How other threads reach the I/O thread: a post, refused once the client
// is shutting down (the io_context may be gone after that).
struct Poster {
  std::mutex mutex;
  asio::io_context* ioc = nullptr;
  bool alive = true;

  template <class F>
  bool post(F&& f) {
    std::lock_guard lock(mutex);
    if (!alive) return false;
    asio::post(*ioc, std::forward<F>(f));
    return true;
  }
};

struct Connection {
  Connection(asio::io_context& ioc, ssl::context* tls_ctx, std::atomic<std::size_t>& open)
      : buffer(kBufferLimit), idle_timer(ioc), open_(open) {
    if (tls_ctx) {
      tls.emplace(ioc, *tls_ctx);
    } else {
      plain.emplace(ioc);
    }
    buffer.reserve(2 * kReadSize);  // (Beast reads what the capacity leaves, at most 64 KiB.)
    open_.fetch_add(1, std::memory_order_relaxed);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() { open_.fetch_sub(1, std::memory_order_relaxed); }

  tcp::socket& socket() { return tls ? tls->next_layer() : *plain; }
  void close() {
    error_code ignored;
    socket().close(ignored);
  }
  // Nothing unread: not in our buffer, not inside TLS, not on the socket
  // (readable data or end of file on an idle connection means the server
  // sent more than its response, closed, or broke it).
  bool clean() {
    if (!socket().is_open() || buffer.size() != 0) return false;
    if (tls && SSL_pending(tls->native_handle()) > 0) return false;
    char byte;
    ssize_t n = ::recv(socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
  // Bytes that can be read now without waiting.
  bool more_ready() {
    if (buffer.size() > 0) return true;
    if (tls && SSL_pending(tls->native_handle()) > 0) return true;
    error_code ec;
    return socket().available(ec) > 0 && !ec;
  }

  template <class F>
  auto visit(F&& f) {
    if (tls) return f(*tls);
    return f(*plain);
  }

  std::optional<tcp::socket> plain;
  std::optional<ssl::stream<tcp::socket>> tls;
  beast::flat_buffer buffer;
  bool reused = false;
  // While idle: since when, and a number that tells this stay from the next.
  Clock::time_point idle_since;
  std::uint64_t idle_generation = 0;
  asio::steady_timer idle_timer;

 private:
  std::atomic<std::size_t>& open_;
};

struct Op;

struct Client::Impl : std::enable_shared_from_this<Impl> {
  // Checks the options, sets TLS up, starts the I/O thread.
  explicit Impl(ClientOptions opts);

  // Fails what still runs, closes every connection, joins the I/O thread.
  void shutdown();
  static void attach(StreamedResponse& response, std::shared_ptr<StreamedResponse::State> state) {
    response.state_ = std::move(state);
  }

  // I/O thread: keeps a clean connection for reuse, watched: it is dropped
  // the moment the server closes it or sends anything, or when it has been
  // idle for ClientOptions::max_idle_time.
  void keep_idle(const std::string& key, std::unique_ptr<Connection> conn);
  // Closes an idle connection, if it is still that stay's (never touches a
  // connection it does not find: `raw` may be gone).
  void forget_idle(const std::string& key, Connection* raw, std::uint64_t generation);
  // A kept connection for `key` that is still clean and young, or null.
  std::unique_ptr<Connection> take_idle(const std::string& key);

  ClientOptions options;
  asio::io_context ioc{1};
  asio::executor_work_guard<asio::io_context::executor_type> work{ioc.get_executor()};
  ssl::context tls_ctx;
  detail::ProxyConfig proxies;
  std::shared_ptr<detail::Lookups> lookups;
  std::shared_ptr<Poster> poster = std::make_shared<Poster>();
  std::thread thread;
  std::atomic<std::size_t> open{0};
  // I/O thread only:
  std::map<std::string, std::vector<std::unique_ptr<Connection>>> idle;
  // The requests under way, for the destructor to fail. Weak: an op can end
  // without finish() (its StreamedResponse released once the client had
  // begun closing, when nothing more is posted here).
  std::map<Op*, std::weak_ptr<Op>> ops;
};

inline std::exception_ptr client_closed() {
  return std::make_exception_ptr(
      HttpError(HttpError::Kind::client_closed, "the http::Client was destroyed before the request finished"));
}

// A BodySource runs on a thread of its own ("cancellable-body"), one call at
// a time, only when the I/O thread asks for the next piece: however slow it
// is, and however many empty pieces it returns, the I/O thread stays free.
// Once the request has ended it is not called again; a call in progress is
// not waited for (its piece is dropped).
struct SourcePump {
  std::mutex mutex;
  std::condition_variable wanted;
  BodySource source;
  // The request's token: once it is cancelled the source is not called
  // again, even before the teardown reaches the I/O thread.
  CancellationToken token;
  bool want = false;
  bool stop = false;
  bool ready = false;
  std::optional<std::string> piece;
  std::exception_ptr error;
  std::function<void()> wake;  // Posts "a piece is ready" to the I/O thread.

  void run() {
    for (;;) {
      {
        std::unique_lock lock(mutex);
        wanted.wait(lock, [&] { return want || stop; });
        if (stop) return;
      }
      std::optional<std::string> next;
      std::exception_ptr failed;
      do {
        if (token.is_cancelled()) return;
        try {
          next = source();
        } catch (...) {
          failed = std::current_exception();
        }
        std::lock_guard lock(mutex);
        if (stop) return;
      } while (!failed && next && next->empty());  // (Empty pieces never reach the I/O thread.)
      std::function<void()> w;
      {
        std::lock_guard lock(mutex);
        if (stop) return;
        want = false;
        ready = true;
        piece = std::move(next);
        error = failed;
        w = wake;
      }
      w();
      if (failed || !piece) return;
    }
  }
  void halt() {
    {
      std::lock_guard lock(mutex);
      stop = true;
    }
    wanted.notify_all();
  }
};


// One request, from the call until its body is read (or abandoned).
struct Op : std::enable_shared_from_this<Op> {
  Op(std::shared_ptr<Client::Impl> client, Request r, Url u, CancellationToken t)
      : impl(std::move(client)),
        req(std::move(r)),
        url(std::move(u)),
        token(std::move(t)),
        watchdog(impl->ioc),
        resolve_wait(impl->ioc),
        source_wait(impl->ioc) {
    if (impl->options.timeout.count() > 0) deadline = after(Clock::now(), impl->options.timeout);
  }
  ~Op() {
    if (pump) pump->halt();
    drop_connection();
    if (settled) settled->set_value();
  }

  // A hook for a completer: posts the abort to the I/O thread (never owns
  // the op on the cancelling thread, so the op, and the completer inside it,
  // is never destroyed inside its own hook).
  std::function<void()> abort_hook(CancellationToken t) {
    return [w = weak_from_this(), poster = impl->poster, t] {
      poster->post([w, e = t.exception()] {
        if (auto op = w.lock()) op->abort(e);
      });
    };
  }

  // I/O thread: stop everything of this request; its pending operations
  // complete with an error and the coroutine reports `e`.
  void abort(std::exception_ptr e) {
    if (aborted || finished) return;
    aborted = true;
    error = std::move(e);
    if (conn) conn->close();
    if (pump) pump->halt();
    resolve_wait.cancel();
    source_wait.cancel();
    watchdog.cancel();
  }
  [[noreturn]] void rethrow() { std::rethrow_exception(error); }
  void check() {
    if (aborted) rethrow();
  }
  std::string context() const { return req.method + " " + url.str(); }

  // The deadline and the idle limit: one timer. Starting I/O only re-arms
  // it when it would fire too late; firing early, it re-arms itself for
  // what is left. (A timer update is a system call: this keeps it to about
  // two per request, not one per read.)
  void begin_io() {
    io_started = Clock::now();
    io_pending = true;
    auto idle = impl->options.idle_timeout;
    if (idle.count() > 0 && (!armed || armed_at > after(io_started, idle))) arm();
  }
  void end_io() { io_pending = false; }
  void arm() {
    if (aborted || finished) return;
    auto idle = impl->options.idle_timeout;
    Clock::time_point next = deadline;
    if (io_pending && idle.count() > 0) next = std::min(next, after(io_started, idle));
    if (next == Clock::time_point::max()) return;
    armed = true;
    armed_at = next;
    watchdog.expires_at(next);
    watchdog.async_wait([w = weak_from_this(), generation = ++arm_generation](error_code ec) {
      auto op = w.lock();
      if (!op || generation != op->arm_generation) return;  // (Re-armed since.)
      op->armed = false;
      if (ec != asio::error::operation_aborted) op->on_watchdog();
    });
  }
  void on_watchdog() {
    if (aborted || finished) return;
    auto now = Clock::now();
    auto idle = impl->options.idle_timeout;
    if (now >= deadline) {
      abort(std::make_exception_ptr(HttpError(HttpError::Kind::deadline,
                                              context() + ": no complete response within " +
                                                  describe(impl->options.timeout) + " (ClientOptions::timeout)")));
    } else if (io_pending && idle.count() > 0 && now >= after(io_started, idle)) {
      abort(std::make_exception_ptr(HttpError(HttpError::Kind::idle_timeout,
                                              context() + ": nothing happened on the connection for " +
                                                  describe(idle) + " (ClientOptions::idle_timeout)")));
    } else {
      arm();
    }
  }

  void finish() {
    finished = true;
    watchdog.cancel();
    resolve_wait.cancel();
    source_wait.cancel();
    if (pump) pump->halt();
    impl->ops.erase(this);
  }
  // Back to the idle connections if the server keeps it alive and nothing
  // of this exchange is left unread (bytes after the body would otherwise
  // reach the next request as its response).
  void release_connection() {
    if (!conn) return;
    if (parser && parser->is_done() && parser->keep_alive() && !aborted && !close_after && conn->clean()) {
      impl->keep_idle(conn_key, std::move(conn));
    }
    drop_connection();
  }
  void drop_connection() {
    if (conn) conn->close();
    conn.reset();
  }

  std::shared_ptr<Client::Impl> impl;
  Request req;
  Url url;
  CancellationToken token;
  const Url* proxy = nullptr;  // (Points into impl->proxies.)
  std::string conn_key;        // The idle list the connection belongs to.
  std::unique_ptr<CancellableCompleter<Response>> full;
  std::unique_ptr<CancellableCompleter<StreamedResponse>> streamed;
  std::unique_ptr<CancellableCompleter<void>> body_guard;  // The request's token while the body streams.
  // RequestRun::settled: completed by the destructor, once the connection is
  // closed or kept idle (null when nobody asked).
  std::shared_ptr<cancellable::detail::FutureState<void>> settled;
  std::unique_ptr<Connection> conn;
  std::optional<bhttp::response_parser<bhttp::buffer_body>> parser;
  detail::Inflater inflater;
  std::unique_ptr<char[]> scratch;  // Raw body bytes, before decoding.
  std::shared_ptr<SourcePump> pump;
  asio::steady_timer watchdog;
  asio::steady_timer resolve_wait;
  asio::steady_timer source_wait;
  Clock::time_point deadline = Clock::time_point::max();
  Clock::time_point io_started;
  Clock::time_point armed_at;
  std::uint64_t arm_generation = 0;
  bool armed = false;
  bool io_pending = false;
  bool aborted = false;
  bool finished = false;
  bool body_done = false;
  bool close_after = false;  // The connection may not be reused (e.g. a 1xx-confused exchange).
  std::size_t body_bytes = 0;  // Decoded so far.
  std::exception_ptr error;
};

struct StreamedResponse::State {
  std::shared_ptr<Op> op;
  // The read outstanding (caller side): a second one is a logic_error.
  std::mutex mutex;
  std::function<bool()> outstanding_done;

  void begin_read(std::function<bool()> done) {
    std::lock_guard lock(mutex);
    if (outstanding_done && !outstanding_done())
      throw std::logic_error("StreamedResponse: a read while another read of the same body is outstanding");
    outstanding_done = std::move(done);
  }

  ~State() {
    // The connection is the I/O thread's: it closes it (or keeps it, if the
    // body was read to its end). With the client gone, nothing runs there.
    auto o = std::move(op);
    auto poster = o->impl->poster;
    // Closed, not destroyed: a read may still be outstanding on it (its
    // coroutine holds the op, and the connection goes with the op).
    poster->post([o] {
      if (!o->body_done) o->abort(std::make_exception_ptr(HttpError(
                             HttpError::Kind::client_closed, "the StreamedResponse was released")));
      o->finish();
    });
  }
};

// The exchange of a request (exchange.cpp): a whole response, or its head
// with the body left to StreamedResponse's reads.
asio::awaitable<void> run_full(std::shared_ptr<Op> op);
asio::awaitable<void> run_streamed(std::shared_ptr<Op> op);

}  // namespace cancellable::http
