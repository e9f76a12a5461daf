// The shared state behind every CancellationToken: the cancelled flag, the
// exception, and the intrusive list of attached cancellables.
//
// Locking: one mutex per state guards the list, the links inside each attached
// Cancellable and the notification bookkeeping. No lock is held while user
// code (on_cancel, stop callbacks) runs.
#pragma once

#include <atomic>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <thread>

namespace cancellable {
class Cancellable;
}

namespace cancellable::detail {

class TokenState : public std::enable_shared_from_this<TokenState> {
 public:
  TokenState() = default;
  TokenState(const TokenState&) = delete;
  TokenState& operator=(const TokenState&) = delete;
  virtual ~TokenState();

  virtual bool is_cancelled() const noexcept { return own_cancelled(); }
  virtual std::exception_ptr exception() const noexcept { return own_exception(); }

  // What CancellationToken::cancel does; merged tokens refine it.
  virtual bool request_cancel(std::exception_ptr exception) { return cancel(std::move(exception)); }
  // Cancels this state: the first call wins. A null exception means
  // CancelledException.
  bool cancel(std::exception_ptr exception);

  bool attach(Cancellable& c);
  void detach(Cancellable& c);
  // Detaches c from the token it is attached to, if any, without waiting for
  // an on_cancel of c running on another thread (that call may still be
  // under way when this returns). For library code that detaches under a
  // lock of its own, which that on_cancel may need. c's attach and detach
  // calls must not race this one.
  static void detach_without_waiting(Cancellable& c);
  bool has_cancellables() const;

  virtual std::stop_token stop_token();

 protected:
  bool own_cancelled() const noexcept { return cancelled_.load(std::memory_order_acquire); }
  std::exception_ptr own_exception() const noexcept {
    return own_cancelled() ? exception_ : nullptr;
  }

  // Called without the lock after an attach made the list non-empty.
  virtual void on_first_attach() {}
  // Called without the lock after a detach emptied the list (not on cancel).
  virtual void on_last_detach() {}
  // Called without the lock once cancelled, before cancellables are notified.
  virtual void on_cancelled() {}

 private:
  void unlink(Cancellable& c) noexcept;
  void detach(Cancellable& c, bool wait_for_callback);

  mutable std::mutex mutex_;
  std::condition_variable callback_done_;
  std::atomic<bool> cancelled_{false};
  std::exception_ptr exception_;  // written once, before cancelled_ is set
  Cancellable* head_ = nullptr;
  Cancellable* tail_ = nullptr;
  // The cancellable whose on_cancel is running, and on which thread.
  Cancellable* running_ = nullptr;
  std::thread::id notifying_thread_;
  int detach_waiters_ = 0;
  std::optional<std::stop_source> stop_source_;
};

}  // namespace cancellable::detail
