#include "cancellable/timeout_cancellation_token.hpp"

#include <atomic>
#include <mutex>
#include <stdexcept>

#include "cancellable/detail/timer.hpp"
#include "cancellable/exceptions.hpp"
#include "runner/core/token_state.hpp"

namespace cancellable {

namespace {

class TimeoutState final : public detail::TokenState {
 public:
  TimeoutState(std::chrono::nanoseconds timeout, std::exception_ptr exception)
      : timeout_(timeout), exception_(std::move(exception)) {}

  ~TimeoutState() override { stop(); }

  // Starts the countdown once; later calls do nothing.
  void start() {
    if (started_.exchange(true, std::memory_order_acq_rel)) return;
    std::weak_ptr<TokenState> weak = weak_from_this();
    auto timer = detail::start_timer(timeout_, [weak, timeout = timeout_, exception = exception_] {
      if (auto state = weak.lock()) {
        state->cancel(exception ? exception : std::make_exception_ptr(TimeoutException(timeout)));
      }
    });
    std::lock_guard lock(timer_mutex_);
    timer_ = std::move(timer);
    if (stopped_) timer_->cancel();
  }

 private:
  void on_first_attach() override { start(); }
  void on_cancelled() override { stop(); }

  void stop() {
    std::lock_guard lock(timer_mutex_);
    stopped_ = true;
    if (timer_) timer_->cancel();
  }

  const std::chrono::nanoseconds timeout_;
  const std::exception_ptr exception_;
  std::atomic<bool> started_{false};
  std::mutex timer_mutex_;
  bool stopped_ = false;
  std::shared_ptr<detail::Timer> timer_;
};

std::shared_ptr<TimeoutState> make_state(std::chrono::nanoseconds timeout,
                                         const TimeoutOptions& options) {
  if (timeout.count() < 0) {
    throw std::invalid_argument("TimeoutCancellationToken: the timeout must not be negative");
  }
  auto state = std::make_shared<TimeoutState>(timeout, options.exception);
  if (!options.lazy_start) state->start();
  return state;
}

}  // namespace

TimeoutCancellationToken::TimeoutCancellationToken(std::chrono::nanoseconds timeout,
                                                   TimeoutOptions options)
    : CancellationToken(make_state(timeout, options)), timeout_(timeout) {}

}  // namespace cancellable
