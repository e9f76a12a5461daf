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
// NSS module) and add a dependency for something a thread does.
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

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// ---- URLs ----------------------------------------------------------------

struct Url {
  bool tls = false;
  std::string host;  // Without brackets for IPv6.
  std::uint16_t port = 80;
  std::string target = "/";

  std::string authority() const {
    std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    if (port != (tls ? 443 : 80)) h += ":" + std::to_string(port);
    return h;
  }
  std::string str() const { return (tls ? "https://" : "http://") + authority() + target; }
  std::string key() const { return (tls ? "https://" : "http://") + host + ":" + std::to_string(port); }
};

[[noreturn]] void bad_url(std::string_view url, const std::string& why) {
  throw HttpError(HttpError::Kind::bad_url, "bad URL '" + std::string(url) + "': " + why);
}

Url parse_url(std::string_view text) {
  Url url;
  std::string_view rest = text;
  auto scheme_end = rest.find("://");
  if (scheme_end == std::string_view::npos) bad_url(text, "no scheme (expected http:// or https://)");
  std::string scheme = lower(rest.substr(0, scheme_end));
  if (scheme == "https") {
    url.tls = true;
    url.port = 443;
  } else if (scheme != "http") {
    bad_url(text, "scheme '" + scheme + "' is not http or https");
  }
  rest.remove_prefix(scheme_end + 3);
  auto auth_end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, auth_end);
  rest = auth_end == std::string_view::npos ? std::string_view{} : rest.substr(auth_end);
  if (authority.find('@') != std::string_view::npos) bad_url(text, "user information is not supported");
  std::string_view host = authority, port;
  if (!authority.empty() && authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos) bad_url(text, "unterminated IPv6 address");
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') bad_url(text, "junk after the IPv6 address");
      port = after.substr(1);
    }
    error_code ec;
    asio::ip::make_address_v6(std::string(host), ec);
    if (ec) bad_url(text, "'" + std::string(host) + "' is not an IPv6 address");
  } else {
    auto colon = authority.rfind(':');
    if (colon != std::string_view::npos) {
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
    }
    for (char c : host)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_')
        bad_url(text, "host '" + std::string(host) + "' has a character not allowed in a host name");
  }
  if (host.empty()) bad_url(text, "no host");
  url.host = lower(host);
  if (!port.empty()) {
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535)
      bad_url(text, "port '" + std::string(port) + "' is not a number from 1 to 65535");
    url.port = static_cast<std::uint16_t>(value);
  }
  auto fragment = rest.find('#');
  if (fragment != std::string_view::npos) rest = rest.substr(0, fragment);
  if (rest.empty()) {
    url.target = "/";
  } else {
    url.target = rest.front() == '?' ? "/" + std::string(rest) : std::string(rest);
  }
  for (char c : url.target)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) bad_url(text, "the path has a space or a control character");
  return url;
}

// A Location header against the URL that sent it.
Url resolve_location(const Url& base, std::string_view location) {
  if (location.find("://") != std::string_view::npos) return parse_url(location);
  if (location.starts_with("//")) return parse_url((base.tls ? "https:" : "http:") + std::string(location));
  Url url = base;
  if (location.starts_with("/")) {
    url.target = std::string(location);
  } else {
    std::string dir = base.target.substr(0, base.target.find('?'));
    dir = dir.substr(0, dir.rfind('/') + 1);
    url.target = dir + std::string(location);
  }
  return parse_url(url.str());
}

// ---- zlib ----------------------------------------------------------------

class Inflater {
 public:
  Inflater() = default;
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;
  ~Inflater() {
    if (active_) inflateEnd(&zs_);
  }

  // encoding: the Content-Encoding header (lower case); anything but gzip
  // and deflate passes through.
  void start(const std::string& encoding) {
    if (active_) inflateEnd(&zs_);
    active_ = false;
    deflate_ = encoding == "deflate";
    if (encoding != "gzip" && encoding != "x-gzip" && !deflate_) return;
    zs_ = {};
    if (inflateInit2(&zs_, deflate_ ? MAX_WBITS : 16 + MAX_WBITS) != Z_OK)
      throw std::bad_alloc();
    active_ = true;
    produced_ = false;
    ended_ = false;
  }

  std::string feed(const char* data, std::size_t size) {
    if (!active_) return std::string(data, size);
    std::string out;
    char buf[32768];
    zs_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data));
    zs_.avail_in = static_cast<uInt>(size);
    while (zs_.avail_in > 0 && !ended_) {
      zs_.next_out = reinterpret_cast<Bytef*>(buf);
      zs_.avail_out = sizeof buf;
      int rc = inflate(&zs_, Z_NO_FLUSH);
      if (rc == Z_DATA_ERROR && deflate_ && !produced_ && zs_.total_in == 0) {
        // "deflate" from servers that send a raw stream without the zlib header.
        inflateEnd(&zs_);
        zs_ = {};
        if (inflateInit2(&zs_, -MAX_WBITS) != Z_OK) throw std::bad_alloc();
        zs_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data));
        zs_.avail_in = static_cast<uInt>(size);
        deflate_ = false;
        continue;
      }
      if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR)
        throw HttpError(HttpError::Kind::protocol,
                        std::string("the compressed body is corrupt: ") + (zs_.msg ? zs_.msg : "zlib error"));
      std::size_t n = sizeof buf - zs_.avail_out;
      out.append(buf, n);
      if (n) produced_ = true;
      if (rc == Z_STREAM_END) ended_ = true;
      if (rc == Z_BUF_ERROR && n == 0) break;
    }
    return out;
  }

 private:
  z_stream zs_{};
  bool active_ = false;
  bool deflate_ = false;
  bool produced_ = false;
  bool ended_ = false;
};

// ---- the I/O side --------------------------------------------------------

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
      : open_(open) {
    if (tls_ctx) {
      tls.emplace(ioc, *tls_ctx);
    } else {
      plain.emplace(ioc);
    }
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
  // An idle kept-alive connection is usable if nothing is waiting on it:
  // readable data (or end of file) means the server closed or broke it.
  bool usable() {
    if (!socket().is_open()) return false;
    char byte;
    ssize_t n = ::recv(socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
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

 private:
  std::atomic<std::size_t>& open_;
};

}  // namespace

struct Op;

struct Client::Impl : std::enable_shared_from_this<Impl> {
  explicit Impl(ClientOptions opts) : options(std::move(opts)), tls_ctx(ssl::context::tls_client) {
    if (options.max_redirects < 0) throw std::invalid_argument("ClientOptions::max_redirects is negative");
    if (options.timeout.count() < 0 || options.idle_timeout.count() < 0)
      throw std::invalid_argument("ClientOptions: a negative timeout");
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

  ClientOptions options;
  asio::io_context ioc{1};
  asio::executor_work_guard<asio::io_context::executor_type> work{ioc.get_executor()};
  ssl::context tls_ctx;
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
}  // namespace

// One request, from the call until its body is read (or abandoned).
struct Op : std::enable_shared_from_this<Op> {
  Op(std::shared_ptr<Client::Impl> client, Request r, Url u, CancellationToken t)
      : impl(std::move(client)),
        req(std::move(r)),
        url(std::move(u)),
        token(std::move(t)),
        watchdog(impl->ioc),
        resolve_wait(impl->ioc) {
    if (impl->options.timeout.count() > 0) deadline = Clock::now() + impl->options.timeout;
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
    resolve_wait.cancel();
    watchdog.cancel();
  }
  [[noreturn]] void rethrow() { std::rethrow_exception(error); }
  void check() {
    if (aborted) rethrow();
  }

  // The deadline and the idle limit: one timer. Starting I/O only re-arms
  // it when it would fire too late; firing early, it re-arms itself for
  // what is left. (A timer update is a system call: this keeps it to about
  // two per request, not one per read.)
  void begin_io() {
    io_started = Clock::now();
    io_pending = true;
    auto idle = impl->options.idle_timeout;
    if (idle.count() > 0 && (!armed || armed_at > io_started + idle)) arm();
  }
  void end_io() { io_pending = false; }
  void arm() {
    if (aborted || finished) return;
    auto idle = impl->options.idle_timeout;
    Clock::time_point next = deadline;
    if (io_pending && idle.count() > 0) next = std::min(next, io_started + idle);
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
      abort(std::make_exception_ptr(HttpError(
          HttpError::Kind::deadline, req.method + " " + url.str() + ": no complete response within " +
                                         format_duration(impl->options.timeout) + " (ClientOptions::timeout)")));
    } else if (io_pending && idle.count() > 0 && now >= io_started + idle) {
      abort(std::make_exception_ptr(HttpError(
          HttpError::Kind::idle_timeout, req.method + " " + url.str() + ": nothing happened on the connection for " +
                                             format_duration(idle) + " (ClientOptions::idle_timeout)")));
    } else {
      arm();
    }
  }

  void finish() {
    finished = true;
    watchdog.cancel();
    resolve_wait.cancel();
    impl->ops.erase(this);
  }
  // Back to the idle connections if the server keeps it alive.
  void release_connection() {
    if (!conn) return;
    if (parser && parser->is_done() && parser->keep_alive() && !aborted) {
      auto& list = impl->idle[url.key()];
      if (list.size() < impl->options.max_idle_per_host) {
        conn->reused = true;
        list.push_back(std::move(conn));
      }
    }
    conn.reset();
  }
  void drop_connection() {
    if (conn) conn->close();
    conn.reset();
  }

  std::shared_ptr<Client::Impl> impl;
  Request req;
  Url url;
  CancellationToken token;
  std::unique_ptr<CancellableCompleter<Response>> full;
  std::unique_ptr<CancellableCompleter<StreamedResponse>> streamed;
  std::unique_ptr<CancellableCompleter<void>> body_guard;  // The request's token while the body streams.
  std::shared_ptr<CancellableCompleter<std::optional<std::string>>> chunk;  // The read outstanding.
  std::unique_ptr<Connection> conn;
  std::optional<bhttp::response_parser<bhttp::buffer_body>> parser;
  Inflater inflater;
  std::size_t body_bytes = 0;
  asio::steady_timer watchdog;
  asio::steady_timer resolve_wait;
  Clock::time_point deadline = Clock::time_point::max();
  Clock::time_point io_started;
  Clock::time_point armed_at;
  std::uint64_t arm_generation = 0;
  bool armed = false;
  bool io_pending = false;
  bool aborted = false;
  bool finished = false;
  bool body_done = false;
  std::exception_ptr error;
};

struct StreamedResponse::State {
  std::shared_ptr<Op> op;
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
  throw HttpError(kind, op.req.method + " " + op.url.str() + ": " + what + ": " + ec.message());
}

bool is_ip_literal(const std::string& host) {
  error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

struct Lookup {
  std::mutex mutex;
  bool done = false;
  std::vector<tcp::endpoint> endpoints;
  std::string error;
};

asio::awaitable<std::vector<tcp::endpoint>> resolve(std::shared_ptr<Op> op) {
  const std::string& host = op->url.host;
  if (is_ip_literal(host)) co_return std::vector<tcp::endpoint>{tcp::endpoint(asio::ip::make_address(host), op->url.port)};
  auto lookup = std::make_shared<Lookup>();
  std::thread lookup_thread([lookup, host, port = op->url.port, poster = op->impl->poster, w = std::weak_ptr<Op>(op),
                             resolver = op->impl->options.resolver] {
    std::vector<tcp::endpoint> endpoints;
    std::string error;
    if (resolver) {
      try {
        for (const auto& address : resolver(host)) endpoints.emplace_back(asio::ip::make_address(address), port);
      } catch (const std::exception& e) {
        error = e.what();
      }
    } else {
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      addrinfo* found = nullptr;
      int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
      if (rc != 0) {
        error = rc == EAI_SYSTEM ? std::strerror(errno) : ::gai_strerror(rc);
      } else {
        for (addrinfo* a = found; a; a = a->ai_next) {
          tcp::endpoint ep;
          std::memcpy(ep.data(), a->ai_addr, a->ai_addrlen);
          ep.resize(a->ai_addrlen);
          endpoints.push_back(ep);
        }
        ::freeaddrinfo(found);
      }
    }
    {
      std::lock_guard lock(lookup->mutex);
      lookup->endpoints = std::move(endpoints);
      lookup->error = std::move(error);
      lookup->done = true;
    }
    poster->post([w] {
      if (auto o = w.lock()) o->resolve_wait.cancel();
    });
  });
  // Named here, not by the thread itself: once the client's I/O thread has
  // moved on (or been joined), every lookup thread it started carries its name.
  ::pthread_setname_np(lookup_thread.native_handle(), "cancellable-dns");
  lookup_thread.detach();
  for (;;) {
    {
      std::lock_guard lock(lookup->mutex);
      if (lookup->done) break;
    }
    op->check();
    op->resolve_wait.expires_at(Clock::time_point::max());
    co_await op->resolve_wait.async_wait(use_tuple);
    op->check();
  }
  std::lock_guard lock(lookup->mutex);
  if (!lookup->error.empty() || lookup->endpoints.empty())
    throw HttpError(HttpError::Kind::unknown_host, op->req.method + " " + op->url.str() + ": cannot resolve '" +
                                                       host + "': " + (lookup->error.empty() ? "no address" : lookup->error));
  co_return std::move(lookup->endpoints);
}

// A kept-alive connection to the same place, or a new one.
asio::awaitable<void> acquire(std::shared_ptr<Op> op, bool allow_reuse) {
  auto& impl = *op->impl;
  auto found = impl.idle.find(op->url.key());
  while (allow_reuse && found != impl.idle.end() && !found->second.empty()) {
    auto conn = std::move(found->second.back());
    found->second.pop_back();
    if (conn->usable()) {
      op->conn = std::move(conn);
      co_return;
    }
  }
  auto endpoints = co_await resolve(op);
  op->conn = std::make_unique<Connection>(impl.ioc, op->url.tls ? &impl.tls_ctx : nullptr, impl.open);
  op->check();  // (An abort that came while we resolved found no connection to close.)
  op->begin_io();
  auto [ec, endpoint] = co_await asio::async_connect(op->conn->socket(), endpoints, use_tuple);
  op->end_io();
  if (ec) fail(*op, HttpError::Kind::connect_failed, "cannot connect to " + op->url.authority(), ec);
  op->conn->socket().set_option(tcp::no_delay(true));
  if (op->url.tls) {
    SSL* ssl = op->conn->tls->native_handle();
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (is_ip_literal(op->url.host)) {
      X509_VERIFY_PARAM_set1_ip_asc(param, op->url.host.c_str());
    } else {
      X509_VERIFY_PARAM_set1_host(param, op->url.host.c_str(), 0);
      SSL_set_tlsext_host_name(ssl, op->url.host.c_str());  // SNI
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
                      op->req.method + " " + op->url.str() + ": TLS handshake with " + op->url.authority() +
                          " failed: " + why);
    }
  }
}

// Sends the request; returns the error (a reused connection may be stale).
asio::awaitable<error_code> write_request(std::shared_ptr<Op> op) {
  const auto& opts = op->impl->options;
  auto set_common = [&](auto& msg) {
    msg.method_string(op->req.method);
    msg.target(op->url.target);
    msg.version(11);
    msg.set(bhttp::field::host, op->url.authority());
    for (const auto& [name, value] : op->req.headers.fields()) msg.insert(name, value);
    if (!op->req.headers.contains("user-agent")) msg.set(bhttp::field::user_agent, opts.user_agent);
    if (opts.decompress && !op->req.headers.contains("accept-encoding"))
      msg.set(bhttp::field::accept_encoding, "gzip, deflate");
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
    op->check();  // Never read the source once the request is aborted.
    std::optional<std::string> piece;
    try {
      piece = op->req.body_source();
    } catch (const std::exception& e) {
      throw HttpError(HttpError::Kind::body_source,
                      op->req.method + " " + op->url.str() + ": the request body's source failed: " + e.what());
    }
    op->check();
    if (piece && piece->empty()) continue;
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

asio::awaitable<error_code> read_header(std::shared_ptr<Op> op) {
  op->parser.emplace();
  op->parser->body_limit(boost::none);  // Counted after decoding (max_body_bytes).
  op->parser->header_limit(64 * 1024);
  if (iequals(op->req.method, "HEAD")) op->parser->skip(true);
  op->begin_io();
  auto [ec, n] = co_await op->conn->visit(
      [&](auto& s) { return bhttp::async_read_header(s, op->conn->buffer, *op->parser, use_tuple); });
  op->end_io();
  co_return ec;
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
      bool nothing_back = !op->parser || op->conn->buffer.size() == 0;
      if (reused && attempt == 0 && !op->req.body_source && nothing_back &&
          (writing || ec == bhttp::error::end_of_stream || ec == asio::error::connection_reset)) {
        op->drop_connection();
        continue;
      }
      if (ec == bhttp::error::end_of_stream)
        fail(*op, HttpError::Kind::protocol, "the server closed the connection without a response", ec);
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
                      op->req.method + " " + op->url.str() + ": more than " + std::to_string(opts.max_redirects) +
                          " redirects (ClientOptions::max_redirects)");
    Url next = resolve_location(op->url, std::string(location->value()));
    op->drop_connection();  // (Its body is not read; a new connection is cheaper than draining it.)
    if (status == 303 || ((status == 301 || status == 302) && iequals(op->req.method, "POST"))) {
      if (!iequals(op->req.method, "HEAD")) op->req.method = "GET";
      op->req.body.clear();
      op->req.headers.erase("content-length");
      op->req.headers.erase("content-type");
    }
    if (next.key() != op->url.key()) op->req.headers.erase("authorization");
    op->url = std::move(next);
  }
}

Headers headers_of(const bhttp::response_parser<bhttp::buffer_body>& parser) {
  Headers headers;
  for (const auto& field : parser.get()) headers.add(std::string(field.name_string()), std::string(field.value()));
  return headers;
}

// The next piece of the decoded body; nullopt at its end.
asio::awaitable<std::optional<std::string>> read_piece(std::shared_ptr<Op> op) {
  const auto& opts = op->impl->options;
  for (;;) {
    op->check();
    if (op->parser->is_done()) co_return std::nullopt;
    char buf[16384];
    auto& body = op->parser->get().body();
    body.data = buf;
    body.size = sizeof buf;
    op->begin_io();
    auto [ec, n] = co_await op->conn->visit(
        [&](auto& s) { return bhttp::async_read_some(s, op->conn->buffer, *op->parser, use_tuple); });
    op->end_io();
    op->check();
    if (ec == bhttp::error::need_buffer) ec = {};
    if (ec) fail(*op, HttpError::Kind::protocol, "reading the body failed", ec);
    std::size_t got = sizeof buf - body.size;
    if (got == 0) continue;
    std::string piece = opts.decompress ? op->inflater.feed(buf, got) : std::string(buf, got);
    op->body_bytes += piece.size();
    if (op->body_bytes > opts.max_body_bytes)
      throw HttpError(HttpError::Kind::body_too_large,
                      op->req.method + " " + op->url.str() + ": the body is larger than " +
                          std::to_string(opts.max_body_bytes) + " bytes (ClientOptions::max_body_bytes)");
    if (!piece.empty()) co_return piece;
  }
}

void start_body(Op& op) {
  auto& msg = op.parser->get();
  auto encoding = msg.find(bhttp::field::content_encoding);
  op.inflater.start(encoding == msg.end() ? std::string() : lower(encoding->value()));
  op.body_bytes = 0;
}

asio::awaitable<void> run_full(std::shared_ptr<Op> op) {
  try {
    co_await exchange(op);
    start_body(*op);
    std::string body;
    while (auto piece = co_await read_piece(op)) body += *piece;
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

asio::awaitable<void> run_chunk(std::shared_ptr<Op> op, std::shared_ptr<CancellableCompleter<std::optional<std::string>>> c) {
  try {
    auto piece = co_await read_piece(op);
    if (!piece) {
      op->body_done = true;
      op->release_connection();
      if (op->body_guard) op->body_guard->complete();
      op->finish();
    }
    if (op->chunk == c) op->chunk.reset();
    c->complete(std::move(piece));
  } catch (...) {
    if (!op->aborted) op->abort(std::current_exception());
    if (op->chunk == c) op->chunk.reset();
    if (!c->is_completed()) c->complete_error(op->error);
  }
}

}  // namespace

// ---- public surface ------------------------------------------------------

Headers::Headers(std::initializer_list<std::pair<std::string, std::string>> fields) : fields_(fields) {}

std::optional<std::string> Headers::get(std::string_view name) const {
  for (const auto& [n, v] : fields_)
    if (iequals(n, name)) return v;
  return std::nullopt;
}
void Headers::add(std::string name, std::string value) { fields_.emplace_back(std::move(name), std::move(value)); }
void Headers::set(std::string name, std::string value) {
  erase(name);
  add(std::move(name), std::move(value));
}
void Headers::erase(std::string_view name) {
  std::erase_if(fields_, [&](const auto& f) { return iequals(f.first, name); });
}

const char* to_string(HttpError::Kind kind) noexcept {
  switch (kind) {
    case HttpError::Kind::bad_url: return "bad_url";
    case HttpError::Kind::unknown_host: return "unknown_host";
    case HttpError::Kind::connect_failed: return "connect_failed";
    case HttpError::Kind::tls: return "tls";
    case HttpError::Kind::protocol: return "protocol";
    case HttpError::Kind::too_many_redirects: return "too_many_redirects";
    case HttpError::Kind::body_too_large: return "body_too_large";
    case HttpError::Kind::deadline: return "deadline";
    case HttpError::Kind::idle_timeout: return "idle_timeout";
    case HttpError::Kind::body_source: return "body_source";
    case HttpError::Kind::client_closed: return "client_closed";
  }
  return "unknown";
}

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
    url = parse_url(request.url);
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

namespace {
Request make_request(std::string method, std::string url, std::string body, Headers headers) {
  Request r;
  r.method = std::move(method);
  r.url = std::move(url);
  r.body = std::move(body);
  r.headers = std::move(headers);
  return r;
}
}  // namespace

Future<Response> Client::head(std::string url, CancellationToken token, Headers headers) {
  return request(make_request("HEAD", std::move(url), {}, std::move(headers)), std::move(token));
}
Future<Response> Client::get(std::string url, CancellationToken token, Headers headers) {
  return request(make_request("GET", std::move(url), {}, std::move(headers)), std::move(token));
}
Future<Response> Client::post(std::string url, std::string body, CancellationToken token, Headers headers) {
  return request(make_request("POST", std::move(url), std::move(body), std::move(headers)), std::move(token));
}
Future<Response> Client::put(std::string url, std::string body, CancellationToken token, Headers headers) {
  return request(make_request("PUT", std::move(url), std::move(body), std::move(headers)), std::move(token));
}
Future<Response> Client::patch(std::string url, std::string body, CancellationToken token, Headers headers) {
  return request(make_request("PATCH", std::move(url), std::move(body), std::move(headers)), std::move(token));
}
Future<Response> Client::del(std::string url, CancellationToken token, Headers headers) {
  return request(make_request("DELETE", std::move(url), {}, std::move(headers)), std::move(token));
}

namespace {
void require_2xx(const Response& r) {
  if (r.status < 200 || r.status >= 300)
    throw HttpStatusError(r.status, "GET " + r.url + ": status " + std::to_string(r.status) + " " + r.reason);
}
}  // namespace

Future<std::string> Client::read(std::string url, CancellationToken token, Headers headers) {
  return get(std::move(url), std::move(token), std::move(headers)).then([](const Response& r) {
    require_2xx(r);
    return r.body;
  });
}

Future<std::vector<std::uint8_t>> Client::read_bytes(std::string url, CancellationToken token, Headers headers) {
  return get(std::move(url), std::move(token), std::move(headers)).then([](const Response& r) {
    require_2xx(r);
    return std::vector<std::uint8_t>(r.body.begin(), r.body.end());
  });
}

std::size_t Client::open_connections() const { return impl_->open.load(std::memory_order_relaxed); }

Future<std::optional<std::string>> StreamedResponse::read_chunk(CancellationToken token) const {
  if (!state_) return make_failed_future<std::optional<std::string>>(
      std::make_exception_ptr(std::logic_error("StreamedResponse::read_chunk on an empty response")));
  auto op = state_->op;
  auto c = std::make_shared<CancellableCompleter<std::optional<std::string>>>(token, op->abort_hook(token));
  auto future = c->future();
  if (c->is_completed()) return future;
  bool posted = op->impl->poster->post([op, c] {
    if (op->aborted) return c->complete_error(op->error);
    if (op->body_done) return c->complete(std::nullopt);
    if (op->chunk) {
      return c->complete_error(std::make_exception_ptr(
          std::logic_error("StreamedResponse::read_chunk while another read is outstanding")));
    }
    op->chunk = c;
    asio::co_spawn(op->impl->ioc, run_chunk(op, c), asio::detached);
  });
  if (!posted) c->complete_error(client_closed());
  return future;
}

namespace {
Future<std::string> read_all_of(StreamedResponse response, CancellationToken token) {
  std::string out;
  while (auto piece = co_await response.read_chunk(token)) out += *piece;
  co_return out;
}
}  // namespace

Future<std::string> StreamedResponse::read_all(CancellationToken token) const { return read_all_of(*this, token); }

}  // namespace cancellable::http
