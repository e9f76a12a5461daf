// The shared timer service: one thread running a Boost.Asio io_context, one
// steady_timer per pending timer. Every operation on a timer object is posted
// to that thread, so timer objects are never touched concurrently.
#include <atomic>
#include <memory>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "cancellable/detail/library_thread.hpp"
#include "cancellable/detail/timer.hpp"

namespace cancellable::detail {

namespace {

class TimerService {
 public:
  TimerService() : work_(io_.get_executor()), thread_([this] {
    LibraryThreadScope library_thread;
    io_.run();
  }) {}

  boost::asio::io_context& io() { return io_; }

 private:
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::thread thread_;
};

TimerService& service() {
  // Never destroyed: timers may be cancelled while statics are destroyed.
  static auto* instance = new TimerService();
  return *instance;
}

class AsioTimer final : public Timer, public std::enable_shared_from_this<AsioTimer> {
 public:
  explicit AsioTimer(boost::asio::io_context& io) : timer_(io) {}

  void start(std::chrono::nanoseconds delay, std::function<void()> on_fire) {
    const auto deadline = std::chrono::steady_clock::now() + delay;
    boost::asio::post(timer_.get_executor(),
                      [self = shared_from_this(), deadline, on_fire = std::move(on_fire)]() mutable {
                        if (self->cancelled_.load(std::memory_order_acquire)) return;
                        self->timer_.expires_at(deadline);
                        self->timer_.async_wait(
                            [self, on_fire = std::move(on_fire)](const boost::system::error_code& ec) {
                              if (ec || self->cancelled_.load(std::memory_order_acquire)) return;
                              on_fire();
                            });
                      });
  }

  void cancel() noexcept override {
    if (cancelled_.exchange(true, std::memory_order_acq_rel)) return;
    try {
      boost::asio::post(timer_.get_executor(), [self = shared_from_this()] { self->timer_.cancel(); });
    } catch (...) {
      // Out of memory: the handler still sees cancelled_ and does nothing.
    }
  }

 private:
  boost::asio::steady_timer timer_;
  std::atomic<bool> cancelled_{false};
};

}  // namespace

std::shared_ptr<Timer> start_timer(std::chrono::nanoseconds delay, std::function<void()> on_fire) {
  auto timer = std::make_shared<AsioTimer>(service().io());
  timer->start(delay, std::move(on_fire));
  return timer;
}

}  // namespace cancellable::detail
