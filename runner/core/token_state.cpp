#include "runner/core/token_state.hpp"

#include <stdexcept>

#include "cancellable/cancellable_base.hpp"
#include "cancellable/exceptions.hpp"

namespace cancellable::detail {

TokenState::~TokenState() = default;

bool TokenState::cancel(std::exception_ptr exception) {
  if (!exception) exception = std::make_exception_ptr(CancelledException());
  {
    std::lock_guard lock(mutex_);
    if (cancelled_.load(std::memory_order_relaxed)) return false;
    exception_ = std::move(exception);
    cancelled_.store(true, std::memory_order_release);
    notifying_thread_ = std::this_thread::get_id();
  }
  // Keep this state alive while notifying even if a callback drops the last
  // handle to it.
  auto keep_alive = weak_from_this().lock();
  on_cancelled();

  std::unique_lock lock(mutex_);
  while (Cancellable* c = head_) {
    unlink(*c);
    running_ = c;
    lock.unlock();
    // on_cancel must not throw: an escaping exception terminates, as with
    // std::stop_callback.
    [&]() noexcept { c->on_cancel(exception_); }();
    lock.lock();
    running_ = nullptr;
    if (detach_waiters_ > 0) callback_done_.notify_all();
  }
  auto stop_source = stop_source_;
  lock.unlock();
  if (stop_source) stop_source->request_stop();
  return true;
}

void TokenState::unlink(Cancellable& c) noexcept {
  if (c.prev_) {
    c.prev_->next_ = c.next_;
  } else {
    head_ = c.next_;
  }
  if (c.next_) {
    c.next_->prev_ = c.prev_;
  } else {
    tail_ = c.prev_;
  }
  c.prev_ = c.next_ = nullptr;
  c.attached_to_.store(nullptr, std::memory_order_release);
}

bool TokenState::attach(Cancellable& c) {
  bool first = false;
  {
    std::lock_guard lock(mutex_);
    if (is_cancelled()) return false;
    TokenState* current = c.attached_to_.load(std::memory_order_acquire);
    if (current == this) return true;
    if (current != nullptr) {
      throw std::logic_error("Cancellable is already attached to another CancellationToken");
    }
    c.prev_ = tail_;
    c.next_ = nullptr;
    if (tail_) {
      tail_->next_ = &c;
    } else {
      head_ = &c;
      first = true;
    }
    tail_ = &c;
    c.attached_to_.store(this, std::memory_order_release);
  }
  if (first) on_first_attach();
  return true;
}

void TokenState::detach(Cancellable& c) { detach(c, true); }

void TokenState::detach_without_waiting(Cancellable& c) {
  // c.token_ keeps the state it is attached to alive.
  if (TokenState* state = c.attached_to_.load(std::memory_order_acquire)) state->detach(c, false);
}

void TokenState::detach(Cancellable& c, bool wait_for_callback) {
  bool last = false;
  {
    std::unique_lock lock(mutex_);
    if (c.attached_to_.load(std::memory_order_acquire) == this) {
      unlink(c);
      last = head_ == nullptr && !own_cancelled();
    } else if (wait_for_callback && running_ == &c &&
               notifying_thread_ != std::this_thread::get_id()) {
      // on_cancel is running on another thread: wait until it returns.
      ++detach_waiters_;
      callback_done_.wait(lock, [&] { return running_ != &c; });
      --detach_waiters_;
    }
  }
  if (last) on_last_detach();
}

bool TokenState::has_cancellables() const {
  std::lock_guard lock(mutex_);
  return head_ != nullptr;
}

std::stop_token TokenState::stop_token() {
  std::lock_guard lock(mutex_);
  if (!stop_source_) {
    stop_source_.emplace();
    // No stop_callback can exist yet, so requesting under the lock runs no
    // user code.
    if (own_cancelled()) stop_source_->request_stop();
  }
  return stop_source_->get_token();
}

}  // namespace cancellable::detail
