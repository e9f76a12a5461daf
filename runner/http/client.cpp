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
#include "runner/http/client_internal.hpp"

namespace cancellable::http {

// ---- public surface ------------------------------------------------------

Client::Impl::Impl(ClientOptions opts)
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

void Client::Impl::keep_idle(const std::string& key, std::unique_ptr<Connection> conn) {
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
void Client::Impl::forget_idle(const std::string& key, Connection* raw, std::uint64_t generation) {
  auto found = idle.find(key);
  if (found == idle.end()) return;
  auto& list = found->second;
  auto it = std::find_if(list.begin(), list.end(), [&](const auto& c) { return c.get() == raw; });
  if (it == list.end() || (*it)->idle_generation != generation) return;
  list.erase(it);
  if (list.empty()) idle.erase(found);
}
std::unique_ptr<Connection> Client::Impl::take_idle(const std::string& key) {
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

// request() and start(): a whole response; `settled`, if given, completes
// once the op (and its connection) is gone.
Future<Response> start_full(const std::shared_ptr<Client::Impl>& impl, Request& request, CancellationToken& token,
                            std::shared_ptr<cancellable::detail::FutureState<void>> settled) {
  Future<Response> future;
  std::unique_ptr<CancellableCompleter<Response>> completer;
  auto op = make_op(impl, request, token, completer, future);
  if (!op) {
    if (settled) settled->set_value();
    return future;
  }
  op->settled = std::move(settled);
  auto* raw = completer.get();
  op->full = std::move(completer);
  launch(impl, op, [](std::shared_ptr<Op> o) { return run_full(std::move(o)); },
         [raw] { raw->complete_error(client_closed()); });
  return future;
}

}  // namespace

Future<Response> Client::request(Request request, CancellationToken token) {
  return start_full(impl_, request, token, nullptr);
}

RequestRun Client::start(Request request, CancellationToken token) {
  auto settled = std::make_shared<cancellable::detail::FutureState<void>>();
  auto future = start_full(impl_, request, token, settled);
  return RequestRun(std::move(future), Future<void>(std::move(settled)));
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

}  // namespace cancellable::http
