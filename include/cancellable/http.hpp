// http::Client: HTTP/1.1 and HTTPS requests that a CancellationToken stops
// at once (component cancellable::http, Boost.Beast and OpenSSL).
//
// Who holds it: code that downloads or posts and must be able to abandon the
// transfer when its caller or screen is gone. One Client per program (or per
// part of it) is the intended use: it keeps idle connections for reuse.
//
// Guarantees:
//   - Every request returns a Future and takes an optional token. A token
//     cancelled before the call opens no connection; the future has failed
//     with the token's exception when the call returns.
//   - Cancelled later (resolving, connecting, handshaking, sending, waiting
//     for headers, reading the body), the future fails inside cancel(), on the
//     cancelling thread, with the token's exception (a TimeoutCancellationToken
//     gives its TimeoutException). The request's connection is then closed on
//     the client's I/O thread: closed, never a TLS shutdown that waits for the
//     peer, never returned to the pool. Other requests are not disturbed.
//   - One token may be passed to any number of requests: one cancel() stops
//     them all. Nothing stays attached to a token once its request succeeded,
//     failed or was cancelled.
//   - A request body given as a BodySource stops being read when the request
//     is cancelled or fails. A call of the source in progress then returns
//     afterwards, on the source's own thread, which holds a copy of the
//     source: a source must own or share what it uses (capture shared_ptrs,
//     not references to the caller's stack).
//   - Name resolution never delays a cancellation or the destructor: host
//     names are looked up by getaddrinfo (so /etc/hosts and nsswitch apply) on
//     at most ClientOptions::max_lookup_threads threads per client that
//     nobody waits for; concurrent lookups of one host share one call. An
//     abandoned lookup finishes in the background and its answer is dropped.
//     IP literals are never looked up.
//   - Requests are checked before any connection is opened: the method and
//     header names are RFC 9110 tokens, header values hold no CR, LF or NUL,
//     Content-Length/Transfer-Encoding agree with the body, Host appears once
//     (a caller's Host replaces the client's). Otherwise HttpError(bad_request).
//   - Bytes of one response never reach another request: a kept-alive
//     connection is reused only when nothing of the last exchange is left
//     unread, and an idle one is closed the moment its server closes it or
//     sends anything, or after ClientOptions::max_idle_time.
//   - Interim responses (1xx) are read and skipped; a 101 nobody asked for is
//     HttpError(protocol).
//   - Everything the server sends is bounded in memory: the status line and
//     headers (64 KiB), a chunk-size line with its extensions and the trailer
//     (256 KiB), the decoded body (ClientOptions::max_body_bytes) and the
//     decompression ratio (ClientOptions::max_decompression_ratio).
//   - Failures are exceptions, never a hang: HttpError (with a kind(), below)
//     for a bad URL or request, an unknown host, a refused connection, TLS
//     failures (certificate not trusted, wrong host name), a malformed
//     response, too many redirects or one we cannot follow, a body over
//     ClientOptions::max_body_bytes, the total deadline
//     (ClientOptions::timeout), the idle limit between bytes
//     (ClientOptions::idle_timeout) and the proxy. A server that drips a byte
//     a second is stopped by the total deadline. Any duration up to
//     milliseconds::max() is valid.
//   - HTTPS verifies the peer against the system's certificate store (plus
//     ClientOptions::ca_file), checks the host name (or IP address) against
//     the certificate, and sends SNI; a trailing-dot host ("a.test.") is
//     checked and sent without its dot, as curl does.
//   - Redirects (301, 302, 303, 307, 308) are followed up to
//     ClientOptions::max_redirects; the Location is resolved as RFC 3986
//     says; 303, and 301/302 after a POST, become a GET without body;
//     Authorization, Cookie, Proxy-Authorization (and a caller's Host) are
//     dropped when the scheme, host or port changes. A request with a
//     BodySource does not follow redirects (its body cannot be sent twice):
//     the 3xx is its response. Bodies with Content-Encoding gzip or deflate
//     (zlib-wrapped or raw, as curl reads it) are decoded (zlib).
//     Connections are kept alive and reused per scheme, host, port and proxy.
//   - Proxies: ClientOptions::proxy, or the environment as curl reads it;
//     https:// through CONNECT.
//
// Threads and callbacks: a Client runs one I/O thread ("cancellable-io"),
// lookup threads ("cancellable-dns") and a thread per BodySource
// ("cancellable-body"). Futures complete on the I/O thread (or on the
// cancelling thread); a continuation attached with then() without an
// executor runs there too, so it must not block or wait for another request
// of the same client. No lock of the library is held while a BodySource or
// a resolver runs.
//
// Thread-safety: distinct objects: safe. Shared Client: every member may be
// called concurrently from any thread. A StreamedResponse is used by one
// thread at a time, with one read outstanding at a time (a second throws
// std::logic_error).
// Lifetime: the destructor fails the requests still running with
// HttpError(kind::client_closed), closes every connection and joins the I/O
// thread; it waits for no lookup and no BodySource. It must not run on that
// I/O thread (in a continuation of one of the client's futures). A
// StreamedResponse keeps what it needs of its client alive, but its reads
// fail with client_closed once the client is gone.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cancellable/cancellation_token.hpp"
#include "cancellable/future.hpp"

namespace cancellable::http {

// Header fields in the order received; names compare case-insensitively.
class Headers {
 public:
  Headers() = default;
  Headers(std::initializer_list<std::pair<std::string, std::string>> fields);

  // The first value of the field, if present.
  std::optional<std::string> get(std::string_view name) const;
  bool contains(std::string_view name) const { return get(name).has_value(); }
  // Adds a field (a second one with the same name is kept).
  void add(std::string name, std::string value);
  // Replaces every field of that name with one.
  void set(std::string name, std::string value);
  void erase(std::string_view name);

  const std::vector<std::pair<std::string, std::string>>& fields() const noexcept { return fields_; }
  bool empty() const noexcept { return fields_.empty(); }

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

// A request body produced while it is sent: it returns the next piece, or
// std::nullopt at the end. Sent with Transfer-Encoding: chunked. An exception
// it throws fails the request. It is called on a thread of its own
// ("cancellable-body", one per request that has a source), one call at a
// time and only when the connection can take the next piece: a slow source
// (or one that returns empty pieces) never holds up the client's other
// requests, deadlines, cancels or destructor. After the request ended
// (finished, failed, cancelled, client destroyed) it is not called again;
// a call in progress then is not waited for, and its piece is dropped. Its
// copies (and what they capture) are released when that last call returns.
using BodySource = std::function<std::optional<std::string>()>;

struct Request {
  Request() = default;
  Request(std::string method_, std::string url_, std::string body_ = {}, Headers headers_ = {})
      : method(std::move(method_)), url(std::move(url_)), headers(std::move(headers_)), body(std::move(body_)) {}

  std::string method = "GET";
  std::string url;  // http://host[:port]/path?query or https://...
  Headers headers;
  std::string body;
  BodySource body_source;  // If set, used instead of body.
};

struct Response {
  int status = 0;
  std::string reason;
  Headers headers;
  std::string body;  // Decoded (gzip/deflate) unless ClientOptions::decompress is off.
  std::string url;   // The URL that answered, after redirects.
};

class HttpError : public std::runtime_error {
 public:
  enum class Kind {
    bad_url,             // Not an http:// or https:// URL, or not one we can parse.
    unknown_host,        // The name did not resolve.
    connect_failed,      // Refused, unreachable.
    tls,                 // Handshake failed; certificate not trusted or for another host.
    protocol,            // Malformed response, or the peer closed mid-response.
    too_many_redirects,  // More than ClientOptions::max_redirects.
    body_too_large,      // Over ClientOptions::max_body_bytes.
    deadline,            // ClientOptions::timeout passed.
    idle_timeout,        // Nothing arrived (or could be sent) for ClientOptions::idle_timeout.
    body_source,         // The BodySource threw.
    client_closed,       // The Client was destroyed first.
    bad_request,         // The request itself: a method or header name that is not a token, CR/LF/NUL
                         // in a header value, Content-Length/Transfer-Encoding that disagree with the
                         // body, Host twice. Found before any connection is opened.
    bad_redirect,        // The server redirected to a URL we cannot follow (another scheme, not a URL).
    proxy,               // The proxy: cannot be resolved or reached, refused CONNECT, or its URL in the
                         // environment does not parse.
  };
  HttpError(Kind kind, const std::string& what) : std::runtime_error(what), kind_(kind) {}
  Kind kind() const noexcept { return kind_; }

 private:
  Kind kind_;
};

// "bad_url", "unknown_host", ...
const char* to_string(HttpError::Kind kind) noexcept;

struct ClientOptions {
  // Redirects followed per request; one more is HttpError(too_many_redirects).
  int max_redirects = 10;
  // Largest body (after decoding) a Response may hold; read_chunk() counts too.
  std::size_t max_body_bytes = std::size_t{1} << 30;
  // Total time for a request: from the call until the body has been read
  // (for send(): until the headers arrived). Zero: no deadline.
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
  // Longest wait for progress on the connection (connect, handshake, each
  // read and write). Zero: no limit.
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(30)};
  // Decode gzip/deflate bodies (and send Accept-Encoding: gzip, deflate).
  bool decompress = true;
  // HTTPS: verify the server's certificate and host name (never turn this off
  // outside tests). Off: any certificate is accepted.
  bool verify_peer = true;
  // HTTPS: an extra PEM file of trusted certificates (a private CA).
  std::string ca_file;
  // Idle connections kept per scheme, host and port (and proxy).
  std::size_t max_idle_per_host = 8;
  // An idle connection older than this is closed, not reused (curl's
  // default, 118 s). Zero: no connection is kept. One the server closes, or
  // on which it sends anything, is closed at once.
  std::chrono::milliseconds max_idle_time{std::chrono::seconds(118)};
  // A compressed body may decode to at most this many bytes per compressed
  // byte, once it has passed 1 MiB (zip bombs); beyond, HttpError(body_too_large).
  // Zero: no limit but max_body_bytes.
  std::size_t max_decompression_ratio = 200;
  // Threads that look host names up at once (each a "cancellable-dns"
  // thread, started when needed and ended when nothing waits). Lookups of a
  // host already being looked up share its answer.
  std::size_t max_lookup_threads = 4;
  // The proxy. Unset: from the environment as curl reads it (http_proxy for
  // http:// URLs, lower case only; https_proxy or HTTPS_PROXY for https://;
  // all_proxy or ALL_PROXY for both). Empty: no proxy. Otherwise a URL,
  // "http://[user:password@]host[:port]" (port 1080 if none, as curl);
  // https:// URLs go through it with CONNECT, http:// ones as absolute
  // requests.
  std::optional<std::string> proxy;
  // Hosts reached directly: unset reads no_proxy or NO_PROXY. A list
  // separated by commas or spaces: "*" (every host), a host name (it and
  // every name below it; a leading dot is ignored), an IP address, or a
  // range such as 10.0.0.0/8.
  std::optional<std::string> no_proxy;
  // Sent unless the request sets User-Agent itself.
  std::string user_agent = "cancellable-http";
  // Resolves host names instead of getaddrinfo: the IP addresses for a host
  // (to pin hosts, as curl's --resolve does). Called on the lookup's own
  // thread, so it may block; an empty list or an exception is
  // HttpError(unknown_host). Not called for IP literals.
  std::function<std::vector<std::string>(const std::string& host)> resolver;
};

class Client;

// The answer to send(): status and headers, with the body still to read. A
// cheap copyable handle (as Future values are): copies read the same body.
// When the last copy goes, a connection whose body was not read to its end
// is closed; one read to its end goes back to the client's idle connections.
class StreamedResponse {
 public:
  int status = 0;
  std::string reason;
  Headers headers;
  std::string url;

  // The next piece of the (decoded) body, or std::nullopt at its end. The
  // read fails with `token`'s exception if that token is cancelled, and with
  // the request's token's exception if that one is (inside cancel(), either
  // way); either closes the connection, after which every read fails the same
  // way. It hands over what has arrived (up to 1 MiB). One read at a time: a
  // second while one is outstanding throws std::logic_error (so does a read
  // of an empty StreamedResponse).
  Future<std::optional<std::string>> read_chunk(CancellationToken token = CancellationToken::none()) const;
  // Reads the rest of the body. The read keeps the response alive until it
  // is over: `client.send(r).get().read_all()` reads to the end.
  Future<std::string> read_all(CancellationToken token = CancellationToken::none()) const;

  struct State;

 private:
  friend class Client;
  std::shared_ptr<State> state_;
};

// A request started with Client::start: its response, and when it is over.
class RequestRun {
 public:
  RequestRun(Future<Response> future, Future<void> settled)
      : future_(std::move(future)), settled_(std::move(settled)) {}
  // The response (as Client::request returns it).
  const Future<Response>& future() const noexcept { return future_; }
  // Completes (never fails) once the request holds nothing any more: its
  // connection closed (or back among the client's idle connections), its
  // timers and body source stopped. A cancelled request's future fails at
  // once; this completes when the I/O thread has closed its connection. At
  // once for a request that never opened one. Completes on the I/O thread.
  const Future<void>& settled() const noexcept { return settled_; }

 private:
  Future<Response> future_;
  Future<void> settled_;
};

class Client {
 public:
  explicit Client(ClientOptions options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Any request; the body is read to its end.
  Future<Response> request(Request request, CancellationToken token = CancellationToken::none());
  // As request(), and also tells when the request is over (RequestRun::
  // settled): what a TaskGroup (task_group.hpp) waits for.
  RequestRun start(Request request, CancellationToken token = CancellationToken::none());
  // Any request; completes once the headers arrived (after redirects).
  Future<StreamedResponse> send(Request request, CancellationToken token = CancellationToken::none());

  Future<Response> head(std::string url, CancellationToken token = CancellationToken::none(),
                        Headers headers = {});
  Future<Response> get(std::string url, CancellationToken token = CancellationToken::none(),
                       Headers headers = {});
  Future<Response> post(std::string url, std::string body, CancellationToken token = CancellationToken::none(),
                        Headers headers = {});
  Future<Response> put(std::string url, std::string body, CancellationToken token = CancellationToken::none(),
                       Headers headers = {});
  Future<Response> patch(std::string url, std::string body, CancellationToken token = CancellationToken::none(),
                         Headers headers = {});
  Future<Response> del(std::string url, CancellationToken token = CancellationToken::none(),
                       Headers headers = {});
  // GET, and the body if the status is 2xx; otherwise HttpStatusError.
  Future<std::string> read(std::string url, CancellationToken token = CancellationToken::none(),
                           Headers headers = {});
  Future<std::vector<std::uint8_t>> read_bytes(std::string url,
                                               CancellationToken token = CancellationToken::none(),
                                               Headers headers = {});

  // Connections open now (in use or idle); for tests and diagnostics.
  std::size_t open_connections() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

// read()/read_bytes() on a status outside 2xx.
class HttpStatusError : public std::runtime_error {
 public:
  HttpStatusError(int status, const std::string& what) : std::runtime_error(what), status_(status) {}
  int status() const noexcept { return status_; }

 private:
  int status_;
};

}  // namespace cancellable::http
