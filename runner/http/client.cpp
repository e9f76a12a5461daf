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

}  // namespace cancellable::http
