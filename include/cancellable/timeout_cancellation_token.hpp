// TimeoutCancellationToken: a CancellationToken that cancels itself after a
// duration.
//
// Who holds it: the code that owns a deadline ("this request may take 2 s").
// Pass it (or a copy sliced to CancellationToken) to anything that takes a
// token.
//
// Guarantees:
//   - Eager (the default): the countdown starts at construction. Lazy
//     (lazy_start = true): it starts when the first cancellable attaches.
//   - When the countdown ends the token cancels with options.exception, or with
//     a TimeoutException carrying the duration. TimeoutException is not a
//     CancelledException: a timeout is an error, not a silent cancellation.
//   - A manual cancel() stops the countdown and cancels with a
//     CancelledException (or the exception passed). Whichever comes first
//     wins; attached cancellables are notified once.
//   - All tokens share one timer thread (Boost.Asio steady_timer); on_cancel
//     callbacks of a timed-out token run on that thread, so keep them short.
//     Continuations of futures failed there are handed to the default executor.
//
// Thread-safety: as CancellationToken. Lifetime: the countdown holds no
// reference to the token; when the last copy (and every attached cancellable)
// is gone, the countdown is dropped.
#pragma once

#include <chrono>
#include <exception>

#include "cancellable/cancellation_token.hpp"

namespace cancellable {

struct TimeoutOptions {
  // What the token cancels with when the time is up; null: TimeoutException.
  std::exception_ptr exception = nullptr;
  // Start the countdown when the first cancellable attaches, not now.
  bool lazy_start = false;
};

class TimeoutCancellationToken : public CancellationToken {
 public:
  // Throws std::invalid_argument if timeout is negative.
  explicit TimeoutCancellationToken(std::chrono::nanoseconds timeout,
                                    TimeoutOptions options = {});

  std::chrono::nanoseconds timeout() const noexcept { return timeout_; }

 private:
  std::chrono::nanoseconds timeout_;
};

}  // namespace cancellable
