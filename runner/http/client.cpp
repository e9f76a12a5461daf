// The HTTP client (see include/cancellable/http.hpp).
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

namespace {

using detail::iequals;

using detail::Url;

// Saturating: any duration up to milliseconds::max() is "that long", never
// an overflow.
Clock::time_point after(Clock::time_point from, std::chrono::milliseconds d) {
  if (d.count() <= 0) return from;
  auto room = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::time_point::max() - from);
  if (d >= room) return Clock::time_point::max();
  return from + std::chrono::duration_cast<Clock::duration>(d);
}
std::string describe(std::chrono::milliseconds d) {
  if (d >= std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::hours(24 * 365 * 100)))
    return std::to_string(d.count()) + " ms";
  return format_duration(d);
}

// Base64 (RFC 4648) for Proxy-Authorization: Basic.
std::string base64(std::string_view in) {
  static const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
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

}  // namespace

struct Op;

struct Client::Impl : std::enable_shared_from_this<Impl> {
  explicit Impl(ClientOptions opts)
      : options(std::move(opts)),
        tls_ctx(ssl::context::tls_client),
        proxies(options.proxy, options.no_proxy),
        lookups(std::make_shared<detail::Lookups>(options.max_lookup_threads, options.resolver)) {
    if (options.max_redirects < 0) throw std::invalid_argument("ClientOptions::max_redirects is negative");
    if (options.timeout.count() < 0 || options.idle_timeout.count() < 0 || options.max_idle_time.count() < 0)
      throw std::invalid_argument("ClientOptions: a negative duration");
    if (options.max_lookup_threads == 0) throw std::invalid_argument("ClientOptions::max_lookup_threads is 0");
    tls_ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                        ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    error_code ec;
    tls_ctx.set_default_verify_paths(ec);  // The system store; an empty one is not an error here.
    if (!options.ca_file.empty()) {
      tls_ctx.load_verify_file(options.ca_file, ec);
      if (ec)
        throw std::invalid_argument("ClientOptions::ca_file '" + options.ca_file +
                                    "' is not a readable PEM file: " + ec.message());
    }
    tls_ctx.set_verify_mode(options.verify_peer ? ssl::verify_peer : ssl::verify_none);
    poster->ioc = &ioc;
    thread = std::thread([this] {
      ::pthread_setname_np(::pthread_self(), "cancellable-io");
      ioc.run();
    });
  }

  // Fails what still runs, closes every connection, joins the I/O thread.
  void shutdown();
  static void attach(StreamedResponse& response, std::shared_ptr<StreamedResponse::State> state) {
    response.state_ = std::move(state);
  }

  // I/O thread: keeps a clean connection for reuse, watched: it is dropped
  // the moment the server closes it or sends anything, or when it has been
  // idle for ClientOptions::max_idle_time.
  void keep_idle(const std::string& key, std::unique_ptr<Connection> conn) {
    auto& list = idle[key];
    if (list.size() >= options.max_idle_per_host || options.max_idle_time.count() == 0) return;
    Connection* raw = conn.get();
    raw->reused = true;
    raw->idle_since = Clock::now();
    std::uint64_t generation = ++raw->idle_generation;
    list.push_back(std::move(conn));
    raw->socket().async_wait(tcp::socket::wait_read, [this, key, raw, generation](error_code ec) {
      if (ec != asio::error::operation_aborted) forget_idle(key, raw, generation);
    });
    raw->idle_timer.expires_at(after(raw->idle_since, options.max_idle_time));
    raw->idle_timer.async_wait([this, key, raw, generation](error_code ec) {
      if (ec != asio::error::operation_aborted) forget_idle(key, raw, generation);
    });
  }
  // Closes an idle connection, if it is still that stay's (never touches a
  // connection it does not find: `raw` may be gone).
  void forget_idle(const std::string& key, Connection* raw, std::uint64_t generation) {
    auto found = idle.find(key);
    if (found == idle.end()) return;
    auto& list = found->second;
    auto it = std::find_if(list.begin(), list.end(), [&](const auto& c) { return c.get() == raw; });
    if (it == list.end() || (*it)->idle_generation != generation) return;
    list.erase(it);
    if (list.empty()) idle.erase(found);
  }
  // A kept connection for `key` that is still clean and young, or null.
  std::unique_ptr<Connection> take_idle(const std::string& key) {
    auto found = idle.find(key);
    if (found == idle.end()) return nullptr;
    auto& list = found->second;
    std::unique_ptr<Connection> chosen;
    while (!list.empty() && !chosen) {
      auto conn = std::move(list.back());
      list.pop_back();
      error_code ignored;
      conn->idle_timer.cancel();
      conn->socket().cancel(ignored);  // (The watch; its handler then finds nothing.)
      ++conn->idle_generation;
      if (Clock::now() < after(conn->idle_since, options.max_idle_time) && conn->clean()) chosen = std::move(conn);
    }
    if (list.empty()) idle.erase(found);
    return chosen;
  }

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

namespace {
std::exception_ptr client_closed() {
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
}  // namespace

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

namespace {

[[noreturn]] void fail(Op& op, HttpError::Kind kind, const std::string& what, const error_code& ec) {
  op.check();
  throw HttpError(kind, op.context() + ": " + what + ": " + ec.message());
}

bool is_ip_literal(const std::string& host) {
  error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

asio::awaitable<std::vector<tcp::endpoint>> resolve(std::shared_ptr<Op> op, const Url& where) {
  // (Looked up as given: "a.test." is absolute to DNS, no search domains.)
  const std::string& host = where.host;
  if (is_ip_literal(host)) co_return std::vector<tcp::endpoint>{tcp::endpoint(asio::ip::make_address(host), where.port)};
  auto entry = op->impl->lookups->start(host, [poster = op->impl->poster, w = std::weak_ptr<Op>(op)] {
    poster->post([w] {
      if (auto o = w.lock()) o->resolve_wait.cancel();
    });
  });
  while (!entry->done()) {
    op->check();
    op->resolve_wait.expires_at(Clock::time_point::max());
    co_await op->resolve_wait.async_wait(use_tuple);
    op->check();
  }
  if (!entry->error.empty()) {
    auto kind = op->proxy && &where == op->proxy ? HttpError::Kind::proxy : HttpError::Kind::unknown_host;
    throw HttpError(kind, op->context() + ": cannot resolve '" + host + "'" +
                              (kind == HttpError::Kind::proxy ? " (the proxy)" : "") + ": " + entry->error);
  }
  std::vector<tcp::endpoint> endpoints;
  for (const auto& a : entry->addresses) endpoints.emplace_back(a, where.port);
  co_return endpoints;
}

// HTTPS through a proxy: CONNECT host:port, then TLS inside the tunnel.
asio::awaitable<void> open_tunnel(std::shared_ptr<Op> op) {
  const Url& proxy = *op->proxy;
  auto refused = [&](const std::string& why) {
    op->check();
    return HttpError(HttpError::Kind::proxy, op->context() + ": the proxy " + proxy.host_port() + " " + why);
  };
  bhttp::request<bhttp::empty_body> connect{bhttp::verb::connect, op->url.host_port(), 11};
  connect.set(bhttp::field::host, op->url.host_port());
  connect.set(bhttp::field::user_agent, op->impl->options.user_agent);
  connect.set("Proxy-Connection", "Keep-Alive");  // (As curl sends it.)
  if (!proxy.userinfo.empty()) connect.set(bhttp::field::proxy_authorization, "Basic " + base64(proxy.userinfo));
  op->begin_io();
  auto [wec, wn] = co_await bhttp::async_write(op->conn->socket(), connect, use_tuple);
  op->end_io();
  if (wec) throw refused("closed the connection before the tunnel was open: " + wec.message());
  bhttp::response_parser<bhttp::empty_body> answer;
  answer.skip(true);  // A CONNECT's answer has no body (RFC 9110 section 9.3.6).
  answer.header_limit(kHeaderLimit);
  op->begin_io();
  auto [rec, rn] = co_await bhttp::async_read_header(op->conn->socket(), op->conn->buffer, answer, use_tuple);
  op->end_io();
  if (rec) throw refused("gave no answer to CONNECT: " + rec.message());
  int status = answer.get().result_int();
  if (status / 100 != 2)
    throw refused("refused the tunnel to " + op->url.host_port() + ": " + std::to_string(status) + " " +
                  std::string(answer.get().reason()));
  if (op->conn->buffer.size() != 0) throw refused("sent bytes after its answer to CONNECT");
}

// A kept-alive connection to the same place, or a new one.
asio::awaitable<void> acquire(std::shared_ptr<Op> op, bool allow_reuse) {
  auto& impl = *op->impl;
  op->proxy = impl.proxies.for_url(op->url);
  op->conn_key = op->url.key() + (op->proxy ? " via " + op->proxy->key() : "");
  if (allow_reuse) {
    if (auto conn = impl.take_idle(op->conn_key)) {
      op->conn = std::move(conn);
      co_return;
    }
  }
  const Url& peer = op->proxy ? *op->proxy : op->url;
  auto endpoints = co_await resolve(op, peer);
  op->conn = std::make_unique<Connection>(impl.ioc, op->url.tls ? &impl.tls_ctx : nullptr, impl.open);
  op->check();  // (An abort that came while we resolved found no connection to close.)
  op->begin_io();
  auto [ec, endpoint] = co_await asio::async_connect(op->conn->socket(), endpoints, use_tuple);
  op->end_io();
  if (ec) {
    if (op->proxy) fail(*op, HttpError::Kind::proxy, "cannot connect to the proxy " + op->proxy->host_port(), ec);
    fail(*op, HttpError::Kind::connect_failed, "cannot connect to " + op->url.authority(), ec);
  }
  op->conn->socket().set_option(tcp::no_delay(true));
  if (op->url.tls) {
    if (op->proxy) co_await open_tunnel(op);
    SSL* ssl = op->conn->tls->native_handle();
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    // "a.test." is "a.test" to the certificate and in SNI (as curl does).
    std::string host = op->url.bare_host();
    if (is_ip_literal(host)) {
      X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
    } else {
      X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0);
      SSL_set_tlsext_host_name(ssl, host.c_str());  // SNI
    }
    op->begin_io();
    auto [hec] = co_await op->conn->tls->async_handshake(ssl::stream_base::client, use_tuple);
    op->end_io();
    if (hec) {
      op->check();
      long verify = SSL_get_verify_result(ssl);
      std::string why = verify != X509_V_OK
                            ? std::string("certificate verification failed: ") + X509_verify_cert_error_string(verify)
                            : hec.message();
      throw HttpError(HttpError::Kind::tls,
                      op->context() + ": TLS handshake with " + op->url.authority() + " failed: " + why);
    }
  }
}

// The next piece of a BodySource, from its thread.
asio::awaitable<std::optional<std::string>> next_piece(std::shared_ptr<Op> op) {
  auto& pump = *op->pump;
  {
    std::lock_guard lock(pump.mutex);
    pump.want = true;
  }
  pump.wanted.notify_one();
  for (;;) {
    op->check();
    {
      std::lock_guard lock(pump.mutex);
      if (pump.ready) {
        pump.ready = false;
        if (pump.error) {
          try {
            std::rethrow_exception(pump.error);
          } catch (const std::exception& e) {
            throw HttpError(HttpError::Kind::body_source, op->context() + ": the request body's source failed: " + e.what());
          } catch (...) {
            throw HttpError(HttpError::Kind::body_source, op->context() + ": the request body's source failed");
          }
        }
        co_return std::move(pump.piece);
      }
    }
    op->begin_io();  // (Waiting for the source counts as idle: idle_timeout applies.)
    op->source_wait.expires_at(Clock::time_point::max());
    co_await op->source_wait.async_wait(use_tuple);
    op->end_io();
  }
}

void start_pump(Op& op) {
  if (op.pump) return;
  auto pump = std::make_shared<SourcePump>();
  pump->source = op.req.body_source;
  pump->wake = [poster = op.impl->poster, w = op.weak_from_this()] {
    poster->post([w] {
      if (auto o = w.lock()) o->source_wait.cancel();
    });
  };
  try {
    std::thread t([pump] { pump->run(); });
    ::pthread_setname_np(t.native_handle(), "cancellable-body");
    t.detach();
  } catch (const std::system_error& e) {
    throw HttpError(HttpError::Kind::body_source,
                    op.context() + ": cannot start a thread for the request body's source: " + e.what());
  }
  op.pump = std::move(pump);
}

// Sends the request; returns the error (a reused connection may be stale).
asio::awaitable<error_code> write_request(std::shared_ptr<Op> op) {
  const auto& opts = op->impl->options;
  bool absolute_form = op->proxy && !op->url.tls;  // Plain HTTP through a proxy.
  auto set_common = [&](auto& msg) {
    msg.method_string(op->req.method);
    msg.target(absolute_form ? op->url.str() : op->url.target);
    msg.version(11);
    // A caller's Host replaces ours (checked: one, not empty).
    auto host = op->req.headers.get("host");
    msg.set(bhttp::field::host, host ? *host : op->url.authority());
    for (const auto& [name, value] : op->req.headers.fields()) {
      // (Host is set above; the body's framing below, from the body itself.)
      if (iequals(name, "host") || iequals(name, "content-length") || iequals(name, "transfer-encoding")) continue;
      msg.insert(name, value);
    }
    if (!op->req.headers.contains("user-agent")) msg.set(bhttp::field::user_agent, opts.user_agent);
    if (opts.decompress && !op->req.headers.contains("accept-encoding"))
      msg.set(bhttp::field::accept_encoding, "gzip, deflate");
    if (absolute_form && !op->proxy->userinfo.empty() && !op->req.headers.contains("proxy-authorization"))
      msg.set(bhttp::field::proxy_authorization, "Basic " + base64(op->proxy->userinfo));
  };
  error_code ec;
  if (!op->req.body_source) {
    bhttp::request<bhttp::string_body> msg;
    set_common(msg);
    msg.body() = op->req.body;
    msg.prepare_payload();
    op->begin_io();
    std::tie(ec, std::ignore) =
        co_await op->conn->visit([&](auto& s) { return bhttp::async_write(s, msg, use_tuple); });
    op->end_io();
    co_return ec;
  }
  start_pump(*op);
  bhttp::request<bhttp::buffer_body> msg;
  set_common(msg);
  msg.chunked(true);
  msg.body().data = nullptr;
  msg.body().more = true;
  bhttp::request_serializer<bhttp::buffer_body> sr{msg};
  op->begin_io();
  std::tie(ec, std::ignore) = co_await op->conn->visit([&](auto& s) { return bhttp::async_write_header(s, sr, use_tuple); });
  op->end_io();
  if (ec) co_return ec;
  for (;;) {
    op->check();  // Never ask the source once the request is aborted.
    std::optional<std::string> piece = co_await next_piece(op);
    op->check();
    msg.body().data = piece ? piece->data() : nullptr;
    msg.body().size = piece ? piece->size() : 0;
    msg.body().more = piece.has_value();
    op->begin_io();
    std::tie(ec, std::ignore) = co_await op->conn->visit([&](auto& s) { return bhttp::async_write(s, sr, use_tuple); });
    op->end_io();
    if (ec == bhttp::error::need_buffer) ec = {};
    if (ec || !piece) co_return ec;
  }
}

// Reads the final response's header: interim responses (1xx) are read and
// skipped, as RFC 9110 section 15.2 asks (curl does the same); a 101 outside
// an upgrade is an error.
asio::awaitable<error_code> read_header(std::shared_ptr<Op> op) {
  for (int interim = 0;; ++interim) {
    op->parser.emplace();
    op->parser->body_limit(boost::none);  // Counted after decoding (max_body_bytes).
    op->parser->header_limit(kHeaderLimit);
    if (iequals(op->req.method, "HEAD")) op->parser->skip(true);
    op->begin_io();
    auto [ec, n] = co_await op->conn->visit(
        [&](auto& s) { return bhttp::async_read_header(s, op->conn->buffer, *op->parser, use_tuple); });
    op->end_io();
    if (ec) co_return ec;
    int status = op->parser->get().result_int();
    if (status >= 200) co_return ec;
    op->check();
    if (status == 101)
      throw HttpError(HttpError::Kind::protocol, op->context() + ": the server switched protocols (101) unasked");
    if (interim >= kMaxInterim)
      throw HttpError(HttpError::Kind::protocol,
                      op->context() + ": more than " + std::to_string(kMaxInterim) + " interim (1xx) responses");
  }
}

bool is_redirect(int status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

// Connect, send, read the headers; follows redirects.
asio::awaitable<void> exchange(std::shared_ptr<Op> op) {
  const auto& opts = op->impl->options;
  for (int redirects = 0;; ++redirects) {
    for (int attempt = 0;; ++attempt) {
      co_await acquire(op, attempt == 0);
      bool reused = op->conn->reused;
      error_code ec = co_await write_request(op);
      bool writing = bool(ec);
      if (!ec) ec = co_await read_header(op);
      if (!ec) break;
      op->check();
      // A kept-alive connection the server closed as we reused it: once more
      // on a new one (never with a body source, which cannot be replayed).
      bool nothing_back = !op->parser || !op->parser->got_some();
      if (reused && attempt == 0 && !op->req.body_source && nothing_back &&
          (writing || ec == bhttp::error::end_of_stream || ec == asio::error::connection_reset)) {
        op->drop_connection();
        continue;
      }
      if (ec == bhttp::error::end_of_stream)
        fail(*op, HttpError::Kind::protocol, "the server closed the connection without a response", ec);
      if (ec == bhttp::error::buffer_overflow || ec == bhttp::error::header_limit)
        fail(*op, HttpError::Kind::protocol, "the response's headers are larger than 64 KiB", ec);
      if (!writing && ec.category() == bhttp::make_error_code(bhttp::error::bad_status).category())
        fail(*op, HttpError::Kind::protocol, "the response is not HTTP/1.x", ec);
      fail(*op, HttpError::Kind::protocol,
           writing ? "sending the request failed" : "reading the response headers failed", ec);
    }
    auto& msg = op->parser->get();
    int status = msg.result_int();
    auto location = msg.find(bhttp::field::location);
    if (!is_redirect(status) || location == msg.end() || op->req.body_source) co_return;
    if (redirects >= opts.max_redirects)
      throw HttpError(HttpError::Kind::too_many_redirects,
                      op->context() + ": more than " + std::to_string(opts.max_redirects) +
                          " redirects (ClientOptions::max_redirects)");
    Url next = detail::resolve_location(op->url, std::string(location->value()));
    op->drop_connection();  // (Its body is not read; a new connection is cheaper than draining it.)
    if (status == 303 || ((status == 301 || status == 302) && iequals(op->req.method, "POST"))) {
      if (!iequals(op->req.method, "HEAD")) op->req.method = "GET";
      op->req.body.clear();
      op->req.headers.erase("content-length");
      op->req.headers.erase("content-type");
    }
    if (!detail::same_origin(next, op->url)) {
      // Credentials go only where the caller sent them (curl drops these
      // too); a caller's Host named the first server only.
      for (auto name : {"authorization", "cookie", "proxy-authorization", "host"}) op->req.headers.erase(name);
    }
    op->url = std::move(next);
  }
}

Headers headers_of(const bhttp::response_parser<bhttp::buffer_body>& parser) {
  Headers headers;
  for (const auto& field : parser.get()) headers.add(std::string(field.name_string()), std::string(field.value()));
  return headers;
}

// Appends the decoded body to `out`: at least one read's worth unless the
// body is over, then whatever has arrived already, until `out` has grown by
// `want`. False once the body is over.
asio::awaitable<bool> read_body(std::shared_ptr<Op> op, std::string& out, std::size_t want) {
  const auto& opts = op->impl->options;
  const std::size_t start = out.size();
  constexpr std::size_t kScratch = 256 * 1024;
  if (!op->scratch) op->scratch.reset(new char[kScratch]);
  bool waited = false;
  for (;;) {
    op->check();
    if (op->parser->is_done()) co_return false;
    if (out.size() - start >= want) co_return true;
    if (waited && out.size() > start && !op->conn->more_ready()) co_return true;
    auto& body = op->parser->get().body();
    body.data = op->scratch.get();
    body.size = kScratch;
    op->begin_io();
    auto [ec, n] = co_await op->conn->visit(
        [&](auto& s) { return bhttp::async_read_some(s, op->conn->buffer, *op->parser, use_tuple); });
    op->end_io();
    op->check();
    waited = true;
    if (ec == bhttp::error::need_buffer) ec = {};
    if (ec == bhttp::error::buffer_overflow)
      fail(*op, HttpError::Kind::protocol,
           "a chunk-size line, its extensions or the trailer is larger than " + std::to_string(kBufferLimit / 1024) +
               " KiB",
           ec);
    if (ec) fail(*op, HttpError::Kind::protocol, "reading the body failed", ec);
    std::size_t got = kScratch - body.size;
    if (got) op->inflater.feed(op->scratch.get(), got, out, op->body_bytes, opts.max_body_bytes, op->context());
  }
}

void start_body(Op& op) {
  auto& msg = op.parser->get();
  auto encoding = msg.find(bhttp::field::content_encoding);
  op.inflater.start(op.impl->options.decompress && encoding != msg.end() ? std::string(encoding->value()) : std::string(),
                    op.impl->options.max_decompression_ratio);
  op.body_bytes = 0;
}

asio::awaitable<void> run_full(std::shared_ptr<Op> op) {
  try {
    co_await exchange(op);
    start_body(*op);
    std::string body;
    if (auto length = op->parser->content_length(); length && !op->inflater.active()) {
      if (*length > op->impl->options.max_body_bytes)
        throw HttpError(HttpError::Kind::body_too_large,
                        op->context() + ": the body is " + std::to_string(*length) + " bytes, larger than " +
                            std::to_string(op->impl->options.max_body_bytes) + " (ClientOptions::max_body_bytes)");
      body.reserve(static_cast<std::size_t>(*length));
    }
    while (co_await read_body(op, body, std::numeric_limits<std::size_t>::max())) {
    }
    Response response;
    response.status = op->parser->get().result_int();
    response.reason = std::string(op->parser->get().reason());
    response.headers = headers_of(*op->parser);
    response.body = std::move(body);
    response.url = op->url.str();
    op->release_connection();
    op->finish();
    op->full->complete(std::move(response));
  } catch (...) {
    auto e = op->aborted ? op->error : std::current_exception();
    op->drop_connection();
    op->finish();
    op->full->complete_error(e);
  }
}

asio::awaitable<void> run_streamed(std::shared_ptr<Op> op) {
  try {
    co_await exchange(op);
    start_body(*op);
    op->deadline = Clock::time_point::max();  // The deadline covers the headers; the body is read by the caller.
    StreamedResponse response;
    response.status = op->parser->get().result_int();
    response.reason = std::string(op->parser->get().reason());
    response.headers = headers_of(*op->parser);
    response.url = op->url.str();
    op->body_guard = std::make_unique<CancellableCompleter<void>>(op->token, op->abort_hook(op->token));
    auto state = std::make_shared<StreamedResponse::State>();
    state->op = op;
    Client::Impl::attach(response, std::move(state));
    // (The completer goes first: its future holds the response, which holds
    // the op.)
    auto completer = std::move(op->streamed);
    completer->complete(std::move(response));
  } catch (...) {
    auto e = op->aborted ? op->error : std::current_exception();
    op->drop_connection();
    op->finish();
    op->streamed->complete_error(e);
  }
}

// A read of the streamed body: one piece (read_chunk) or the rest (read_all).
// `keep` holds what must live while the read runs (read_all(): the response).
template <class T>
asio::awaitable<void> run_read(std::shared_ptr<Op> op, std::shared_ptr<CancellableCompleter<T>> c,
                               [[maybe_unused]] std::shared_ptr<void> keep) {  // (Held by the frame.)
  constexpr bool whole = std::is_same_v<T, std::string>;
  try {
    std::string got;
    if (!op->body_done) {
      if constexpr (whole) {
        if (auto length = op->parser->content_length();
            length && !op->inflater.active() && *length <= op->impl->options.max_body_bytes)
          got.reserve(static_cast<std::size_t>(*length));  // (One allocation, no copies as it grows.)
        while (co_await read_body(op, got, std::numeric_limits<std::size_t>::max())) {
        }
      } else {
        co_await read_body(op, got, kChunkCap);
      }
      if (op->parser->is_done()) {
        op->body_done = true;
        op->release_connection();
        if (op->body_guard) op->body_guard->complete();
        op->finish();
      }
    }
    if constexpr (whole) {
      c->complete(std::move(got));
    } else if (got.empty()) {
      c->complete(std::nullopt);
    } else {
      c->complete(std::optional<std::string>(std::move(got)));
    }
  } catch (...) {
    if (!op->aborted) op->abort(std::current_exception());
    if (!c->is_completed()) c->complete_error(op->error);
  }
}

}  // namespace

// ---- public surface ------------------------------------------------------

void Client::Impl::shutdown() {
  {
    std::lock_guard lock(poster->mutex);
    poster->alive = false;
  }
  asio::post(ioc, [this] {
    std::vector<std::shared_ptr<Op>> running;
    for (auto& [raw, weak] : ops)
      if (auto op = weak.lock()) running.push_back(std::move(op));
    for (auto& op : running) op->abort(client_closed());
    idle.clear();
  });
  work.reset();
  thread.join();
}

Client::Client(ClientOptions options) : impl_(std::make_shared<Impl>(std::move(options))) {}

Client::~Client() { impl_->shutdown(); }

namespace {

template <class T>
std::shared_ptr<Op> make_op(const std::shared_ptr<Client::Impl>& impl, Request& request, CancellationToken& token,
                            std::unique_ptr<CancellableCompleter<T>>& completer_out, Future<T>& future) {
  if (token.is_cancelled()) {  // Before anything else, a bad URL included.
    future = make_failed_future<T>(token.exception());
    return nullptr;
  }
  Url url;
  try {
    url = detail::parse_url(request.url);
    detail::check_request(request, request.method + " " + url.str());
  } catch (...) {
    future = make_failed_future<T>(std::current_exception());
    return nullptr;
  }
  auto op = std::make_shared<Op>(impl, std::move(request), std::move(url), token);
  completer_out = std::make_unique<CancellableCompleter<T>>(token, op->abort_hook(token));
  future = completer_out->future();
  if (completer_out->is_completed()) return nullptr;  // Cancelled already: no connection.
  return op;
}

template <class Run>
void launch(const std::shared_ptr<Client::Impl>& impl, std::shared_ptr<Op> op, Run run,
            const std::function<void()>& on_closed) {
  bool posted = impl->poster->post([op, run] {
    op->impl->ops[op.get()] = op;  // (Replaces a stale entry at the same address.)
    op->arm();
    asio::co_spawn(op->impl->ioc, run(op), asio::detached);
  });
  if (!posted) on_closed();
}

}  // namespace

Future<Response> Client::request(Request request, CancellationToken token) {
  Future<Response> future;
  std::unique_ptr<CancellableCompleter<Response>> completer;
  auto op = make_op(impl_, request, token, completer, future);
  if (!op) return future;
  auto* raw = completer.get();
  op->full = std::move(completer);
  launch(impl_, op, [](std::shared_ptr<Op> o) { return run_full(std::move(o)); },
         [raw] { raw->complete_error(client_closed()); });
  return future;
}

Future<StreamedResponse> Client::send(Request request, CancellationToken token) {
  Future<StreamedResponse> future;
  std::unique_ptr<CancellableCompleter<StreamedResponse>> completer;
  auto op = make_op(impl_, request, token, completer, future);
  if (!op) return future;
  auto* raw = completer.get();
  op->streamed = std::move(completer);
  launch(impl_, op, [](std::shared_ptr<Op> o) { return run_streamed(std::move(o)); },
         [raw] { raw->complete_error(client_closed()); });
  return future;
}

std::size_t Client::open_connections() const { return impl_->open.load(std::memory_order_relaxed); }

namespace {

// A read's completer: it fails inside cancel() of either token, the read's
// own or the request's (both close the connection).
template <class T>
Future<T> start_read(const std::shared_ptr<StreamedResponse::State>& state, CancellationToken token) {
  auto op = state->op;
  CancellationToken both = token.is_none() ? op->token
                           : op->token.is_none() ? token
                                                 : MergedCancellationToken({token, op->token});
  auto c = std::make_shared<CancellableCompleter<T>>(both, op->abort_hook(both));
  auto future = c->future();
  if (c->is_completed()) return future;
  state->begin_read([c] { return c->is_completed(); });  // (Throws for a second read.)
  // read_all() keeps the response until it is over, so that
  // `client.send(r).get().read_all()` reads to the end; a read_chunk() of a
  // released response fails (the release closes the connection).
  std::shared_ptr<void> keep;
  if constexpr (std::is_same_v<T, std::string>) keep = state;
  bool posted = op->impl->poster->post([op, c, keep]() mutable {
    if (op->aborted) return c->complete_error(op->error);
    asio::co_spawn(op->impl->ioc, run_read<T>(op, c, std::move(keep)), asio::detached);
  });
  if (!posted) c->complete_error(client_closed());
  return future;
}

}  // namespace

Future<std::optional<std::string>> StreamedResponse::read_chunk(CancellationToken token) const {
  if (!state_) throw std::logic_error("StreamedResponse::read_chunk on an empty response");
  return start_read<std::optional<std::string>>(state_, std::move(token));
}

Future<std::string> StreamedResponse::read_all(CancellationToken token) const {
  if (!state_) throw std::logic_error("StreamedResponse::read_all on an empty response");
  return start_read<std::string>(state_, std::move(token));
}

}  // namespace cancellable::http
