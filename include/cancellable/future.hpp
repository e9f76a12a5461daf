// Future<T>: the result of every asynchronous call in this library.
//
// Who holds it: whoever wants the result. Futures are cheap copyable handles
// to one shared result (like std::shared_future): any number of threads may
// wait, get() or add continuations. A Future is also a coroutine type: a
// function returning Future<T> may co_await and co_return, and any coroutine
// may co_await a Future.
//
// Guarantees:
//   - A future completes once, with a value or an exception; get() returns
//     the value or rethrows that exact exception object (the same
//     std::exception_ptr every time).
//   - Continuations (then, co_await) run on the thread that completes the
//     future, or inline if it is already complete, unless an executor is
//     given. The library's own threads (the timer service) never run them:
//     they hand them to default_executor(), so a slow continuation cannot
//     delay a timeout.
//   - A coroutine returning Future<T> starts eagerly and runs until its first
//     suspension before the call returns.
//
// Errors: every member except valid() throws std::future_error(no_state) on a
// default-constructed Future. get() rethrows the failure.
//
// Thread-safety: distinct objects: safe. Shared objects: safe; all members
// are const and may be called concurrently.
// Lifetime: get() on a future object returns a reference into the shared
// state; it stays valid while any copy of the future is alive. get() on a
// temporary returns a copy of the value.
#pragma once

#include <chrono>
#include <coroutine>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <type_traits>
#include <utility>

#include "cancellable/detail/future_state.hpp"
#include "cancellable/executor.hpp"

namespace cancellable {

template <class T>
class Future;

namespace detail {

template <class T>
struct is_future : std::false_type {};
template <class T>
struct is_future<Future<T>> : std::true_type {};
template <class T>
inline constexpr bool is_future_v = is_future<std::remove_cvref_t<T>>::value;

template <class T>
struct unwrap_future {
  using type = T;
};
template <class T>
struct unwrap_future<Future<T>> {
  using type = T;
};
// Future<U> -> U, anything else unchanged: the value type after adopting.
template <class T>
using unwrap_future_t = typename unwrap_future<std::remove_cvref_t<T>>::type;

template <class T>
class FuturePromise;

// What a continuation returns when given a T (nothing for T = void).
template <class Fn, class T>
struct continuation_result {
  using type = std::invoke_result_t<Fn&, const T&>;
};
template <class Fn>
struct continuation_result<Fn, void> {
  using type = std::invoke_result_t<Fn&>;
};
template <class Fn, class T>
using continuation_result_t = typename continuation_result<Fn, T>::type;

// Completes dst with src's outcome once src completes.
template <class T>
void forward_outcome(const std::shared_ptr<FutureState<T>>& src,
                     const std::shared_ptr<FutureState<T>>& dst);

// Runs fn and completes dst with its outcome: a value, an exception, or the
// outcome of the Future it returns.
template <class V, class Fn>
void complete_with_result(const std::shared_ptr<FutureState<V>>& dst, Fn&& fn);

}  // namespace detail

template <class T>
class [[nodiscard]] Future {
 public:
  using value_type = T;
  using promise_type = detail::FuturePromise<T>;

  Future() = default;
  explicit Future(std::shared_ptr<detail::FutureState<T>> state) noexcept
      : state_(std::move(state)) {}

  bool valid() const noexcept { return state_ != nullptr; }
  bool is_ready() const { return checked().is_ready(); }
  void wait() const { checked().wait(); }

  template <class Rep, class Period>
  std::future_status wait_for(const std::chrono::duration<Rep, Period>& timeout) const {
    return wait_until(std::chrono::steady_clock::now() + timeout);
  }
  template <class Clock, class Duration>
  std::future_status wait_until(const std::chrono::time_point<Clock, Duration>& deadline) const {
    return checked().wait_until(deadline) ? std::future_status::ready
                                          : std::future_status::timeout;
  }

  // Blocks until complete; returns the value (const T&, or nothing for
  // Future<void>) or rethrows the exception.
  decltype(auto) get() const& {
    wait();
    if (auto error = state_->error()) std::rethrow_exception(error);
    if constexpr (!std::is_void_v<T>) return state_->value();
  }
  // On a temporary future: the value by copy (a T that cannot be copied:
  // const T&, as above), so that `auto&& v = make_future().get();` cannot
  // dangle once the temporary is gone.
  decltype(auto) get() && {
    const Future& self = *this;
    if constexpr (std::is_void_v<T> || !std::is_copy_constructible_v<T>) {
      return self.get();
    } else {
      return T(self.get());
    }
  }

  // How the future failed, without a try/catch: the exception of a failed,
  // complete future (the same std::exception_ptr get() rethrows); null if it
  // is not complete yet or succeeded. Does not block.
  std::exception_ptr exception() const {
    const auto& state = checked();
    return state.is_ready() ? state.error() : nullptr;
  }

  // Returns a future of f's result. f receives the value (nothing for
  // Future<void>); if this future fails, f is not called and the returned
  // future fails with the same exception. A Future returned by f is adopted.
  template <class F>
  auto then(F&& f) const {
    return then_impl(std::forward<F>(f), nullptr);
  }
  // As then(f), but f runs on executor.
  template <class F>
  auto then(F&& f, Executor& executor) const {
    return then_impl(std::forward<F>(f), &executor);
  }

  auto operator co_await() const {
    struct Awaiter {
      std::shared_ptr<detail::FutureState<T>> state;
      bool await_ready() const noexcept { return state->is_ready(); }
      bool await_suspend(std::coroutine_handle<> handle) {
        std::function<void()> resume = [handle] { handle.resume(); };
        return state->subscribe_if_pending(resume);
      }
      T await_resume() const {
        if (auto error = state->error()) std::rethrow_exception(error);
        if constexpr (!std::is_void_v<T>) return state->value();
      }
    };
    return Awaiter{checked_state()};
  }

  // Internal: the shared state.
  const std::shared_ptr<detail::FutureState<T>>& state() const noexcept { return state_; }

 private:
  const detail::FutureState<T>& checked() const { return *checked_state(); }
  const std::shared_ptr<detail::FutureState<T>>& checked_state() const {
    if (!state_) throw std::future_error(std::future_errc::no_state);
    return state_;
  }

  template <class F>
  auto then_impl(F&& f, Executor* executor) const {
    using Fn = std::decay_t<F>;
    using V = detail::unwrap_future_t<detail::continuation_result_t<Fn, T>>;
    auto next = std::make_shared<detail::FutureState<V>>();
    auto fn = std::make_shared<Fn>(std::forward<F>(f));
    auto src = checked_state();
    auto run = [src, next, fn] {
      if (auto error = src->error()) {
        next->set_exception(error);
        return;
      }
      detail::complete_with_result(next, [&]() -> decltype(auto) {
        if constexpr (std::is_void_v<T>) {
          return (*fn)();
        } else {
          return (*fn)(src->value());
        }
      });
    };
    if (executor) {
      src->subscribe([executor, run] { executor->post(run); });
    } else {
      src->subscribe(run);
    }
    return Future<V>(next);
  }

  std::shared_ptr<detail::FutureState<T>> state_;
};

namespace detail {

template <class T>
class FuturePromiseBase {
 public:
  Future<T> get_return_object() { return Future<T>(state_); }
  std::suspend_never initial_suspend() noexcept { return {}; }
  std::suspend_never final_suspend() noexcept { return {}; }
  void unhandled_exception() { state_->set_exception(std::current_exception()); }

 protected:
  std::shared_ptr<FutureState<T>> state_ = std::make_shared<FutureState<T>>();
};

template <class T>
class FuturePromise : public FuturePromiseBase<T> {
 public:
  template <class U = T>
  void return_value(U&& value) {
    this->state_->set_value(std::forward<U>(value));
  }
};

template <>
class FuturePromise<void> : public FuturePromiseBase<void> {
 public:
  void return_void() { state_->set_value(); }
};

template <class T>
void forward_outcome(const std::shared_ptr<FutureState<T>>& src,
                     const std::shared_ptr<FutureState<T>>& dst) {
  src->subscribe([src, dst] {
    if (auto error = src->error()) {
      dst->set_exception(error);
    } else if constexpr (std::is_void_v<T>) {
      dst->set_value();
    } else {
      dst->set_value(src->value());
    }
  });
}

template <class V, class Fn>
void complete_with_result(const std::shared_ptr<FutureState<V>>& dst, Fn&& fn) {
  using R = std::invoke_result_t<Fn&>;
  try {
    if constexpr (is_future_v<R>) {
      auto inner = fn();
      if (!inner.valid()) throw std::future_error(std::future_errc::no_state);
      forward_outcome(inner.state(), dst);
    } else if constexpr (std::is_void_v<R>) {
      fn();
      dst->set_value();
    } else {
      dst->set_value(fn());
    }
  } catch (...) {
    dst->set_exception(std::current_exception());
  }
}

template <class T>
Future<T> make_failed_future(std::exception_ptr error) {
  auto state = std::make_shared<FutureState<T>>();
  state->set_exception(std::move(error));
  return Future<T>(std::move(state));
}

}  // namespace detail

// A future that is already complete with value.
template <class T>
Future<std::decay_t<T>> make_ready_future(T&& value) {
  auto state = std::make_shared<detail::FutureState<std::decay_t<T>>>();
  state->set_value(std::forward<T>(value));
  return Future<std::decay_t<T>>(std::move(state));
}
inline Future<void> make_ready_future() {
  auto state = std::make_shared<detail::FutureState<void>>();
  state->set_value();
  return Future<void>(std::move(state));
}
// A future that has already failed with error.
template <class T>
Future<T> make_failed_future(std::exception_ptr error) {
  return detail::make_failed_future<T>(std::move(error));
}

}  // namespace cancellable
