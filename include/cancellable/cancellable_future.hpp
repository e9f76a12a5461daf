// CancellableFuture: factories for futures that fail as soon as a token is
// cancelled, and as_cancellable.
//
// Who uses it: code that starts asynchronous work and wants its callers to be
// able to stop waiting for it.
//
// Every factory returns Future<R>, takes an optional token (default: none())
// and an optional on_cancel callback, and leaves nothing attached to the token
// once it finishes, successfully or not. On cancellation the future fails with
// the token's exception (the same std::exception_ptr) before on_cancel runs.
//
//   from(computation)       runs computation on the default executor. Token
//                           already cancelled: fails at once, computation
//                           never invoked, on_cancel not called. Cancelled
//                           while queued: never starts. Cancelled while
//                           running: fails at once; the computation runs on
//                           and its result is discarded.
//   microtask(computation)  as from, queued ahead of from work.
//   sync(computation)       same pre-check, then runs it inline now; a throw
//                           becomes a failed future; a returned Future is
//                           adopted.
//   value(v)                wraps a value or adopts a future. Token already
//                           cancelled: fails, on_cancel runs, the source's
//                           own outcome is ignored.
//   delayed(d, computation) token already cancelled: no timer, never runs,
//                           on_cancel runs. Cancelled during the delay: never
//                           runs. Cancelled while running: result discarded.
//                           The computation runs on the default executor.
//                           Without a computation: Future<void> after d.
//
// A computation may take no argument, a std::stop_token (stop-requested when
// the token is cancelled) or a CancellationToken, so that it can stop early.
// It may return a value, void, or a Future (which is adopted).
//
// Thread-safety: the factories may be called from any thread.
#pragma once

#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <stop_token>
#include <type_traits>
#include <utility>

#include "cancellable/cancellation_token.hpp"
#include "cancellable/detail/completer_core.hpp"
#include "cancellable/detail/timer.hpp"
#include "cancellable/executor.hpp"
#include "cancellable/future.hpp"

namespace cancellable {

namespace detail {

// Invokes a computation with what it asks for: a std::stop_token, a
// CancellationToken, or nothing.
template <class F>
decltype(auto) invoke_computation(F& f, const CancellationToken& token) {
  if constexpr (std::is_invocable_v<F&, std::stop_token>) {
    return f(token.stop_token());
  } else if constexpr (std::is_invocable_v<F&, CancellationToken>) {
    return f(token);
  } else {
    return f();
  }
}

// What a computation returns; no `type` (so overloads drop out) when F is not
// callable with a std::stop_token, a CancellationToken or nothing.
template <class F>
struct computation_result {};
template <class F>
  requires std::is_invocable_v<F&, std::stop_token>
struct computation_result<F> {
  using type = std::invoke_result_t<F&, std::stop_token>;
};
template <class F>
  requires(!std::is_invocable_v<F&, std::stop_token> && std::is_invocable_v<F&, CancellationToken>)
struct computation_result<F> {
  using type = std::invoke_result_t<F&, CancellationToken>;
};
template <class F>
  requires(!std::is_invocable_v<F&, std::stop_token> &&
           !std::is_invocable_v<F&, CancellationToken> && std::is_invocable_v<F&>)
struct computation_result<F> {
  using type = std::invoke_result_t<F&>;
};

template <class F>
using computation_result_t = typename computation_result<F>::type;

template <class F>
using computation_value_t = unwrap_future_t<computation_result_t<F>>;

// Runs the computation for core unless the token was cancelled first.
template <class V, class F>
std::function<void()> make_job(std::shared_ptr<CompleterCore<V>> core, std::shared_ptr<F> fn) {
  return [core = std::move(core), fn = std::move(fn)] {
    if (core->is_cancelled()) return;  // cancelled while queued: never starts
    complete_core_with(core, [&]() -> decltype(auto) {
      return invoke_computation(*fn, core->cancellation_token());
    });
  };
}

template <class V, class F>
Future<V> start_on_executor(F&& computation, const CancellationToken& token,
                            std::function<void()> on_cancel, bool microtask) {
  if (token.is_cancelled()) return make_failed_future<V>(token.exception());
  auto core = std::make_shared<CompleterCore<V>>(token, std::move(on_cancel));
  auto future = core->future();
  auto job = make_job<V>(core, std::make_shared<std::decay_t<F>>(std::forward<F>(computation)));
  if (microtask) {
    post_microtask(std::move(job));
  } else {
    default_executor().post(std::move(job));
  }
  return future;
}

}  // namespace detail

struct CancellableFuture {
  template <class F, class V = detail::computation_value_t<std::decay_t<F>>>
  static Future<V> from(F&& computation, const CancellationToken& token = CancellationToken::none(),
                        std::function<void()> on_cancel = {}) {
    return detail::start_on_executor<V>(std::forward<F>(computation), token, std::move(on_cancel),
                                        false);
  }

  template <class F, class V = detail::computation_value_t<std::decay_t<F>>>
  static Future<V> microtask(F&& computation,
                             const CancellationToken& token = CancellationToken::none(),
                             std::function<void()> on_cancel = {}) {
    return detail::start_on_executor<V>(std::forward<F>(computation), token, std::move(on_cancel),
                                        true);
  }

  template <class F, class V = detail::computation_value_t<std::decay_t<F>>>
  static Future<V> sync(F&& computation, const CancellationToken& token = CancellationToken::none(),
                        std::function<void()> on_cancel = {}) {
    if (token.is_cancelled()) return detail::make_failed_future<V>(token.exception());
    auto result = std::make_shared<detail::FutureState<V>>();
    detail::complete_with_result(result, [&]() -> decltype(auto) {
      return detail::invoke_computation(computation, token);
    });
    if (result->is_ready() || token.is_none()) return Future<V>(result);
    return value(Future<V>(result), token, std::move(on_cancel));
  }

  // Adopts source: the result completes with source's outcome unless the
  // token is cancelled first.
  template <class T>
  static Future<T> value(Future<T> source, const CancellationToken& token = CancellationToken::none(),
                         std::function<void()> on_cancel = {}) {
    if (token.is_cancelled()) {
      if (on_cancel) on_cancel();
      return detail::make_failed_future<T>(token.exception());
    }
    if (token.is_none()) return source;
    auto core = std::make_shared<detail::CompleterCore<T>>(token, std::move(on_cancel));
    auto future = core->future();
    auto src = source.state();
    src->subscribe([core, src] { core->complete_from(src); });
    return future;
  }

  // Wraps a plain value.
  template <class U, class = std::enable_if_t<!detail::is_future_v<U>>>
  static Future<std::decay_t<U>> value(U&& v, const CancellationToken& token = CancellationToken::none(),
                                       std::function<void()> on_cancel = {}) {
    if (token.is_cancelled()) {
      if (on_cancel) on_cancel();
      return detail::make_failed_future<std::decay_t<U>>(token.exception());
    }
    return make_ready_future(std::forward<U>(v));
  }

  template <class F, class V = detail::computation_value_t<std::decay_t<F>>>
  static Future<V> delayed(std::chrono::nanoseconds delay, F&& computation,
                           const CancellationToken& token = CancellationToken::none(),
                           std::function<void()> on_cancel = {}) {
    if (token.is_cancelled()) {
      if (on_cancel) on_cancel();
      return detail::make_failed_future<V>(token.exception());
    }
    // The timer is created first so that cancellation can stop it.
    auto timer_slot = std::make_shared<std::shared_ptr<detail::Timer>>();
    auto timer_mutex = std::make_shared<std::mutex>();
    auto stop_timer = [timer_slot, timer_mutex] {
      std::lock_guard lock(*timer_mutex);
      if (*timer_slot) (*timer_slot)->cancel();
      *timer_slot = nullptr;
    };
    auto core = std::make_shared<detail::CompleterCore<V>>(
        token, [stop_timer, on_cancel = std::move(on_cancel)] {
          stop_timer();
          if (on_cancel) on_cancel();
        });
    auto future = core->future();
    if (core->was_cancelled()) return future;
    auto job = detail::make_job<V>(core, std::make_shared<std::decay_t<F>>(std::forward<F>(computation)));
    std::lock_guard lock(*timer_mutex);
    if (core->was_cancelled()) return future;
    *timer_slot = detail::start_timer(delay, [job = std::move(job)] { default_executor().post(job); });
    return future;
  }

  static Future<void> delayed(std::chrono::nanoseconds delay,
                              const CancellationToken& token = CancellationToken::none(),
                              std::function<void()> on_cancel = {}) {
    return delayed(delay, [] {}, token, std::move(on_cancel));
  }
};

// Exactly CancellableFuture::value(future, token).
template <class T>
Future<T> as_cancellable(Future<T> future, const CancellationToken& token) {
  return CancellableFuture::value(std::move(future), token);
}

}  // namespace cancellable
