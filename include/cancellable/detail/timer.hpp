// Internal: one-shot timers on the shared timer service (one Boost.Asio thread).
#pragma once

#include <chrono>
#include <functional>
#include <memory>

namespace cancellable::detail {

class Timer {
 public:
  virtual ~Timer() = default;
  // Prevents on_fire from running if it has not started yet. Idempotent.
  virtual void cancel() noexcept = 0;
};

// Calls on_fire on the timer thread once delay has passed, unless cancelled
// first. on_fire must not throw and must not block; hand real work to an
// executor.
std::shared_ptr<Timer> start_timer(std::chrono::nanoseconds delay,
                                   std::function<void()> on_fire);

}  // namespace cancellable::detail
