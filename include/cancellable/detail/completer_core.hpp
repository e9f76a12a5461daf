// Internal: the cancellable promise behind CancellableCompleter and the
// CancellableFuture factories.
#pragma once

#include <atomic>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <stdexcept>
#include <utility>

#include "cancellable/cancellable_base.hpp"
#include "cancellable/cancellation_token.hpp"
#include "cancellable/detail/future_state.hpp"
#include "cancellable/future.hpp"

namespace cancellable::detail {

template <class T>
class CompleterCore final : public Cancellable {
 public:
  // Attaches to token; if it is already cancelled, the future fails with its
  // exception and on_cancel runs before the constructor returns.
  // before_fail, if given, runs on cancellation as soon as the future has
  // failed and its waiters are woken, before its continuations run (an
  // isolate kills its worker there: neither the woken waiter nor the kill
  // waits for continuations).
  CompleterCore(const CancellationToken& token, std::function<void()> on_cancel,
                std::function<void()> before_fail = nullptr)
      : on_cancel_(std::move(on_cancel)), before_fail_(std::move(before_fail)) {
    maybe_attach(token);
  }

  ~CompleterCore() override {
    detach();
    if (!completed_.load(std::memory_order_acquire) && !cancelled_.load(std::memory_order_acquire)) {
      state_->set_exception(
          std::make_exception_ptr(std::future_error(std::future_errc::broken_promise)));
    }
  }

  Future<T> future() const { return Future<T>(state_); }
  const std::shared_ptr<FutureState<T>>& state() const noexcept { return state_; }

  // Completes with a value (no argument for T = void). Ignored after
  // cancellation; throws std::logic_error on a second completion.
  template <class... U>
  void complete(U&&... value) {
    if (!begin_completion()) return;
    state_->set_value(std::forward<U>(value)...);
  }

  void complete_error(std::exception_ptr error) {
    if (!error) throw std::invalid_argument("CancellableCompleter::complete_error: null exception");
    if (!begin_completion()) return;
    state_->set_exception(std::move(error));
  }

  // Completes with the outcome of src, which must be complete.
  void complete_from(const std::shared_ptr<FutureState<T>>& src) {
    if (auto error = src->error()) {
      complete_error(error);
    } else if constexpr (std::is_void_v<T>) {
      complete();
    } else {
      complete(src->value());
    }
  }

  bool is_completed() const noexcept { return state_->is_ready(); }
  bool was_cancelled() const noexcept { return cancelled_.load(std::memory_order_acquire); }

 private:
  // True if the caller should store its outcome now.
  bool begin_completion() {
    if (completed_.exchange(true, std::memory_order_acq_rel)) {
      if (cancelled_.load(std::memory_order_acquire)) return false;
      throw std::logic_error("CancellableCompleter: the future was already completed");
    }
    // After detach() returns, on_cancel is not running and will not run, so
    // cancelled_ is final: exactly one of cancellation and completion wins.
    detach();
    return !cancelled_.load(std::memory_order_acquire);
  }

  void on_cancel(std::exception_ptr exception) override {
    cancelled_.store(true, std::memory_order_release);
    state_->set_exception_then(std::move(exception), [this] {
      if (before_fail_) before_fail_();
    });
    if (on_cancel_) on_cancel_();
  }

  std::shared_ptr<FutureState<T>> state_ = std::make_shared<FutureState<T>>();
  std::function<void()> on_cancel_;
  std::function<void()> before_fail_;
  std::atomic<bool> completed_{false};
  std::atomic<bool> cancelled_{false};
};

// Runs fn and completes core with its outcome: a value, an exception, or the
// outcome of the Future it returns (core is kept alive until then).
template <class T, class Fn>
void complete_core_with(const std::shared_ptr<CompleterCore<T>>& core, Fn&& fn) {
  auto result = std::make_shared<FutureState<T>>();
  complete_with_result(result, std::forward<Fn>(fn));
  result->subscribe([core, result] { core->complete_from(result); });
}

}  // namespace cancellable::detail
