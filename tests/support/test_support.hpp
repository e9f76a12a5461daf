// Helpers shared by the tests: a cancellable that records its notifications,
// a one-shot event to wait on with a deadline, and a way to hold the default
// executor's threads. Nothing here asserts: Catch2 assertions stay on the
// test's own thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "cancellable/cancellable_base.hpp"
#include "cancellable/cancellation_token.hpp"
#include "cancellable/executor.hpp"
#include "cancellable/future.hpp"

namespace test_support {

using namespace std::chrono_literals;

// Long enough that a correct program never hits it; a failing test says so
// instead of hanging.
inline constexpr auto kDeadline = 10s;

// The failure of f once it is complete (null if it succeeded). If f is not
// complete within kDeadline: a std::runtime_error saying so, which no test
// expects, so the test's own check fails.
template <class T>
std::exception_ptr failure_of(const cancellable::Future<T>& f) {
  if (f.wait_for(kDeadline) != std::future_status::ready) {
    return std::make_exception_ptr(std::runtime_error("the future did not complete by the test deadline"));
  }
  return f.state()->error();
}

// A flag that one thread sets and another waits for, with a deadline.
class Event {
 public:
  void set() {
    // Notify under the lock: a waiter that wakes may destroy the event.
    std::lock_guard lock(mutex_);
    set_ = true;
    cv_.notify_all();
  }
  bool is_set() const {
    std::lock_guard lock(mutex_);
    return set_;
  }
  // True if the event was set before the timeout.
  bool wait(std::chrono::nanoseconds timeout = kDeadline) const {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [this] { return set_; });
  }

 private:
  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  bool set_ = false;
};

// Records every on_cancel call: how many, with what, on which thread, and in
// which order relative to other RecordingCancellables sharing a log.
class RecordingCancellable final : public cancellable::Cancellable {
 public:
  using Log = std::vector<int>;

  explicit RecordingCancellable(int id = 0, std::shared_ptr<std::mutex> log_mutex = nullptr,
                                Log* log = nullptr)
      : id_(id), log_mutex_(std::move(log_mutex)), log_(log) {}
  ~RecordingCancellable() override { detach(); }

  int calls() const { return calls_.load(); }
  std::exception_ptr last_exception() const {
    std::lock_guard lock(mutex_);
    return exception_;
  }
  std::thread::id thread() const {
    std::lock_guard lock(mutex_);
    return thread_;
  }
  // Runs inside on_cancel, before the call is counted.
  std::function<void(std::exception_ptr)> during_cancel;

 private:
  void on_cancel(std::exception_ptr exception) override {
    if (during_cancel) during_cancel(exception);
    {
      std::lock_guard lock(mutex_);
      exception_ = exception;
      thread_ = std::this_thread::get_id();
    }
    if (log_) {
      std::lock_guard lock(*log_mutex_);
      log_->push_back(id_);
    }
    calls_.fetch_add(1);
  }

  int id_;
  std::shared_ptr<std::mutex> log_mutex_;
  Log* log_;
  mutable std::mutex mutex_;
  std::exception_ptr exception_;
  std::thread::id thread_;
  std::atomic<int> calls_{0};
};

// Occupies every thread of the default executor until released, so that
// work posted meanwhile stays queued. Threads can be released one at a time.
class ExecutorBlocker {
 public:
  explicit ExecutorBlocker(std::size_t threads) : shared_(std::make_shared<Shared>(threads)) {
    for (std::size_t i = 0; i < threads; ++i) {
      // The jobs own the shared part: a released thread may still be leaving
      // wait() when this object is destroyed.
      cancellable::default_executor().post([shared = shared_, i] {
        {
          std::lock_guard lock(shared->mutex);
          ++shared->started;
        }
        shared->cv.notify_all();
        shared->gates[i].wait();
      });
    }
  }
  ~ExecutorBlocker() { release_all(); }

  // True once every thread is held.
  bool wait_until_holding() {
    std::unique_lock lock(shared_->mutex);
    return shared_->cv.wait_for(lock, kDeadline,
                                [this] { return shared_->started == shared_->gates.size(); });
  }
  void release_one(std::size_t i) { shared_->gates[i].set(); }
  void release_all() {
    for (auto& gate : shared_->gates) gate.set();
  }

 private:
  struct Shared {
    explicit Shared(std::size_t threads) : gates(threads) {}
    std::vector<Event> gates;
    std::size_t started = 0;
    std::mutex mutex;
    std::condition_variable cv;
  };
  std::shared_ptr<Shared> shared_;
};

// Several threads attach cancellables to `token` (half of them detach again
// at once) while `cancellers` run on threads of their own. Returns how many
// cancellables broke the rules: notified without having attached, notified
// twice, or attached, never detached and not notified. No assertions here:
// the caller checks the count on its own thread.
inline int attach_race_violations(const cancellable::CancellationToken& token,
                                  const std::vector<std::function<void()>>& cancellers,
                                  int threads = 4, int per_thread = 200) {
  std::vector<std::vector<std::unique_ptr<RecordingCancellable>>> cancellables(threads);
  std::vector<std::vector<char>> attached(threads, std::vector<char>(per_thread, 0));
  for (auto& list : cancellables) {
    for (int i = 0; i < per_thread; ++i) list.push_back(std::make_unique<RecordingCancellable>());
  }
  std::atomic<int> ready{0};
  std::vector<std::thread> running;
  for (int t = 0; t < threads; ++t) {
    running.emplace_back([&, t] {
      ready.fetch_add(1);
      for (int i = 0; i < per_thread; ++i) {
        attached[t][i] = token.attach_cancellable(*cancellables[t][i]) ? 1 : 0;
        if (i % 2 == 0) token.detach_cancellable(*cancellables[t][i]);
      }
    });
  }
  for (const auto& cancel : cancellers) {
    running.emplace_back([&, cancel] {
      while (ready.load() < threads) {
      }
      cancel();
    });
  }
  for (auto& t : running) t.join();
  int violations = 0;
  for (int t = 0; t < threads; ++t) {
    for (int i = 0; i < per_thread; ++i) {
      const int calls = cancellables[t][i]->calls();
      if (!attached[t][i]) {
        violations += calls != 0;
      } else if (i % 2 == 1) {
        violations += calls != 1;  // attached and never detached: notified once
      } else {
        violations += calls > 1;  // detach raced the cancellation: at most once
      }
    }
  }
  return violations;
}

// Identity of the exception object an exception_ptr refers to.
inline const void* object_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return &ex;
  } catch (...) {
    return nullptr;
  }
}

}  // namespace test_support
