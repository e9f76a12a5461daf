// A request's exchange on the client's I/O thread (client_internal.hpp):
// the lookup, a connection (new, or kept alive), a proxy's tunnel, the
// request with its body, the response's head (interim responses skipped)
// and body, redirects; and a StreamedResponse's reads.
#include "runner/http/client_internal.hpp"

namespace cancellable::http {

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
  pump->token = op.token;
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

}  // namespace

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

namespace {


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
