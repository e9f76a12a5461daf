// CancellableCompleter<T>: the promise side of a Future<T> that fails as soon
// as a token is cancelled.
//
// Who holds it: the producer of an asynchronous result (a callback-based API,
// an event loop) that wants its consumers to stop waiting when a token is
// cancelled. Hand future() to the consumers; call complete() or
// complete_error() when the result is known.
//
// Guarantees:
//   - Token already cancelled at construction: is_cancelled() is true at once,
//     the future has failed with the token's exception, and on_cancel has run.
//   - Token cancelled later: inside cancel(), the future fails with the
//     token's exception (the same std::exception_ptr), then on_cancel runs.
//   - complete()/complete_error() after cancellation are silently ignored.
//     Without cancellation, completing twice throws std::logic_error.
//   - Completing detaches from the token: nothing is left attached.
//   - Cancellation racing completion on two threads: exactly one of them
//     decides the future, never both.
//   - Destroying the completer before completing it (and without
//     cancellation) fails the future with
//     std::future_error(std::future_errc::broken_promise).
//
// Thread-safety: distinct objects: safe. Shared objects: complete,
// complete_error, is_completed, is_cancelled and future may be called
// concurrently; destruction must not race other calls.
// Lifetime: the future may outlive the completer. The destructor detaches
// from the token, waiting for an on_cancel that is running on another thread.
#pragma once

#include <exception>
#include <functional>
#include <memory>
#include <utility>

#include "cancellable/cancellation_token.hpp"
#include "cancellable/detail/completer_core.hpp"
#include "cancellable/future.hpp"

namespace cancellable {

template <class T>
class CancellableCompleter {
 public:
  explicit CancellableCompleter(CancellationToken token = CancellationToken::none(),
                                std::function<void()> on_cancel = {})
      : core_(std::make_unique<detail::CompleterCore<T>>(token, std::move(on_cancel))) {}

  CancellableCompleter(CancellableCompleter&&) noexcept = default;
  CancellableCompleter& operator=(CancellableCompleter&&) noexcept = default;

  Future<T> future() const { return core_->future(); }

  // Completes the future with value (no argument for CancellableCompleter<void>).
  template <class... U>
  void complete(U&&... value) {
    core_->complete(std::forward<U>(value)...);
  }
  // Fails the future with error. Throws std::invalid_argument if error is null.
  void complete_error(std::exception_ptr error) { core_->complete_error(std::move(error)); }

  // True once the future is complete (by completion or by cancellation).
  bool is_completed() const noexcept { return core_->is_completed(); }
  // True if the future failed because the token was cancelled.
  bool is_cancelled() const noexcept { return core_->was_cancelled(); }

 private:
  std::unique_ptr<detail::CompleterCore<T>> core_;
};

}  // namespace cancellable
