// The default executor: a Boost.Asio thread_pool fed from two queues, so that
// microtasks are taken before ordinary work. Every post() adds one job to a
// queue and one "run the next job" handler to the pool; a handler always takes
// a microtask first if there is one.
#include <algorithm>
#include <deque>
#include <mutex>
#include <thread>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include "cancellable/executor.hpp"
#include "worker/test_seams.hpp"

namespace cancellable {

namespace {

class DefaultExecutor final : public Executor {
 public:
  DefaultExecutor() : threads_(std::max(2u, std::thread::hardware_concurrency())), pool_(threads_) {}

  std::size_t threads() const { return threads_; }

  void post(std::function<void()> work) override { push(std::move(work), false); }
  void post_microtask(std::function<void()> work) { push(std::move(work), true); }

 private:
  void push(std::function<void()> work, bool microtask) {
    {
      std::lock_guard lock(mutex_);
      (microtask ? microtasks_ : tasks_).push_back(std::move(work));
    }
    boost::asio::post(pool_, [this] { run_next(); });
  }

  void run_next() {
    std::function<void()> work;
    {
      std::lock_guard lock(mutex_);
      auto& queue = microtasks_.empty() ? tasks_ : microtasks_;
      if (queue.empty()) return;
      work = std::move(queue.front());
      queue.pop_front();
    }
    work();
  }

  const std::size_t threads_;
  std::mutex mutex_;
  std::deque<std::function<void()>> microtasks_;
  std::deque<std::function<void()>> tasks_;
  boost::asio::thread_pool pool_;
};

DefaultExecutor& instance() {
  // Never destroyed: work may still be queued while statics are destroyed.
  static auto* executor = new DefaultExecutor();
  return *executor;
}

}  // namespace

Executor& default_executor() { return instance(); }

namespace detail {
void post_microtask(std::function<void()> work) { instance().post_microtask(std::move(work)); }
std::size_t default_executor_thread_count() { return instance().threads(); }
}  // namespace detail

}  // namespace cancellable
