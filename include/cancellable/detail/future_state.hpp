// Internal: the shared state behind Future<T>: set once, then read by any
// number of waiters and continuations.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "cancellable/detail/library_thread.hpp"
#include "cancellable/executor.hpp"

namespace cancellable::detail {

class FutureStateBase;

// Something that can complete a state faster from the thread that waits for
// it than by waking that thread from elsewhere (an isolate's worker can be
// reaped by the thread blocked in get() or exited(), as a bare waitpid()
// would).
class WaitHelper {
 public:
  // Called by a thread about to block in an unbounded wait() on state, which
  // is not ready. May block until state is complete, or until wake() for
  // state; must not throw.
  virtual void help_wait(const FutureStateBase& state) noexcept = 0;
  // state has just been completed while a thread may be in help_wait(state).
  virtual void wake(const FutureStateBase& state) noexcept = 0;

 protected:
  ~WaitHelper() = default;
};

class FutureStateBase {
 public:
  FutureStateBase() = default;
  FutureStateBase(const FutureStateBase&) = delete;
  FutureStateBase& operator=(const FutureStateBase&) = delete;

  bool is_ready() const noexcept { return ready_.load(std::memory_order_acquire); }

  void wait() const {
    if (is_ready()) return;
    std::shared_ptr<WaitHelper> helper;
    {
      std::unique_lock lock(mutex_);
      if (done_) return;
      helper = helper_.lock();
      if (!helper || helping_) {
        cv_.wait(lock, [this] { return done_; });
        return;
      }
      helping_ = true;
    }
    helper->help_wait(*this);
    std::unique_lock lock(mutex_);
    helping_ = false;
    cv_.wait(lock, [this] { return done_; });
  }

  // Unbounded waits on this state first call helper (while it lives), one
  // thread at a time.
  void set_wait_helper(std::weak_ptr<WaitHelper> helper) {
    std::lock_guard lock(mutex_);
    helper_ = std::move(helper);
  }

  template <class Clock, class Duration>
  bool wait_until(const std::chrono::time_point<Clock, Duration>& deadline) const {
    if (is_ready()) return true;
    std::unique_lock lock(mutex_);
    return cv_.wait_until(lock, deadline, [this] { return done_; });
  }

  // The failure, or null; only meaningful once ready.
  std::exception_ptr error() const noexcept { return error_; }

  // Fails the state; false if it was already complete.
  bool set_exception(std::exception_ptr e) {
    return complete([&] { error_ = std::move(e); });
  }

  // Fails the state, wakes its waiters, runs then_before_callbacks, and only
  // then runs (or hands on) the continuations; false if already complete.
  template <class F>
  bool set_exception_then(std::exception_ptr e, F&& then_before_callbacks) {
    return complete([&] { error_ = std::move(e); }, std::forward<F>(then_before_callbacks));
  }

  // Runs callback once the state is complete: inline now if it already is.
  void subscribe(std::function<void()> callback) {
    if (!subscribe_if_pending(callback)) callback();
  }

  // Stores callback and returns true if the state is not complete yet;
  // otherwise returns false and does not store it.
  bool subscribe_if_pending(std::function<void()>& callback) {
    std::lock_guard lock(mutex_);
    if (done_) return false;
    callbacks_.push_back(std::move(callback));
    return true;
  }

 protected:
  ~FutureStateBase() = default;

  template <class Store, class BeforeCallbacks = void (*)()>
  bool complete(Store&& store, BeforeCallbacks&& before_callbacks = [] {}) {
    std::vector<std::function<void()>> callbacks;
    std::shared_ptr<WaitHelper> helper;
    {
      std::lock_guard lock(mutex_);
      if (done_) return false;
      store();
      done_ = true;
      ready_.store(true, std::memory_order_release);
      callbacks.swap(callbacks_);
      if (helping_) helper = helper_.lock();
    }
    cv_.notify_all();
    if (helper) helper->wake(*this);
    before_callbacks();
    if (callbacks.empty()) return true;
    if (on_library_thread()) {
      for (auto& callback : callbacks) default_executor().post(std::move(callback));
    } else {
      for (auto& callback : callbacks) {
        // Each callback is destroyed as soon as it has run: what it holds
        // (say, the state of a continuation's future, which a woken waiter
        // may be dropping right now) is released at once, not after the
        // other callbacks.
        std::function<void()> run = std::move(callback);
        run();
      }
    }
    return true;
  }

 private:
  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  bool done_ = false;
  std::atomic<bool> ready_{false};
  std::exception_ptr error_;
  std::vector<std::function<void()>> callbacks_;
  std::weak_ptr<WaitHelper> helper_;
  mutable bool helping_ = false;  // a thread is in helper_->help_wait(*this)
};

template <class T>
class FutureState final : public FutureStateBase {
 public:
  template <class U>
  bool set_value(U&& value) {
    return complete([&] { value_.emplace(std::forward<U>(value)); });
  }
  // Only once ready and without error.
  const T& value() const noexcept { return *value_; }

 private:
  std::optional<T> value_;
};

template <>
class FutureState<void> final : public FutureStateBase {
 public:
  bool set_value() {
    return complete([] {});
  }
};

}  // namespace cancellable::detail
