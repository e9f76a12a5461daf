// TaskGroup: a scope that owns a token, runs children under it, and cannot
// be left while a child still runs (Kotlin's coroutineScope, Trio's
// nurseries, Swift's TaskGroup).
//
//   TaskGroup group(request_token);
//   auto a = group.spawn([&](CancellationToken t) { return client.start(get_a, t); });
//   auto b = group.spawn([&](CancellationToken t) { return pool.start(parse, text, t); });
//   group.join().get();   // both settled; rethrows the first failure
//
// ## Children
// spawn(f) calls f(token()) (or f() if f takes no token) at once, on the
// calling thread, and returns the child's Future<R>. f returns one of:
//   - a run, anything with future() and settled(): Isolate
//     (CancellableIsolate::spawn), PoolRun (WorkerPool::start),
//     http::RequestRun (http::Client::start). The child is over when
//     settled() completes: its worker process reaped, its connection closed;
//   - a Future<R> (any Future-returning call: Client::read, a coroutine,
//     WorkerPool::run): the child is over when that future completes;
//   - a plain value (or nothing): the child is over when f returns.
// An exception thrown by f is the child's failure.
//
// ## Guarantees
//   - token() is cancelled when the parent token given to the constructor is
//     (with the parent's exception), when cancel() is called, and (policy
//     ChildFailure::cancel_group, the default) when a child fails: the first
//     failure cancels every other child with CancelledException("a child of
//     the TaskGroup failed: <what>"). The group never cancels its parent
//     token: it reports upwards through join(), so a group spawned as a child
//     of another group fails (and so cancels) that one.
//   - join() completes once every child has settled (processes reaped,
//     connections closed), never before, and fails with the first child
//     failure in time (with cancel_group, that is the failure that cancelled
//     the others; a cancelled group's join() fails with the cancellation's
//     exception when a child failed with it). Children may spawn children
//     while join() waits; once join() has completed, spawn() throws
//     std::logic_error. join() may be called any number of times: the same
//     future.
//   - when_any(f, g, ...) runs each as a child under a token of its own (a
//     child of the group's): the first to complete wins, the others are
//     cancelled at once. Their failure by that cancellation is not a failure
//     of the group; join() still waits for them to settle.
//   - The destructor cancels the group and waits until join() completes:
//     nothing a group started outlives it.
//
// Errors: spawn() after join() completed: std::logic_error. A child's
// failure is its future's exception, and join()'s if it was the first.
//
// Thread-safety: every member may be called from any thread, concurrently,
// including from inside a child. join()'s future completes on the thread
// where the last child settles (an HTTP client's I/O thread, a pool's
// thread), as continuations do (future.hpp).
// Lifetime: the destructor blocks until every child has settled; it must not
// run on a thread a child needs to settle (inside a continuation of a
// child's future, or on an http::Client's I/O thread).
#pragma once

#include <atomic>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <future>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "cancellable/cancellation_token.hpp"
#include "cancellable/future.hpp"
#include "cancellable/merged_cancellation_token.hpp"
#include "cancellable/when.hpp"

namespace cancellable {

// What a child's failure does to the group.
enum class ChildFailure {
  cancel_group,  // the first failure cancels every other child (default)
  keep_going,    // the others run on; join() still reports the first failure
};

namespace detail {

// The group's state, shared with its children's continuations
// (runner/core/task_group.cpp).
class GroupState {
 public:
  GroupState(const CancellationToken& parent, ChildFailure policy);

  const CancellationToken& token() const noexcept { return token_; }
  bool cancel() const;
  // A child is starting: counted until child_settled(). Throws
  // std::logic_error once join() has completed.
  void begin_child();
  // A child failed with error. Ignored when race is set and error is race's
  // exception (a when_any loser).
  void child_failed(std::exception_ptr error, const CancellationToken* race);
  void child_settled();
  Future<void> join();
  std::size_t running() const;

 private:
  // Lifecycle:
  //   open    -> joining  join() while children run
  //   open    -> joined   join() with none running
  //   joining -> joined   the last child settles
  enum class Phase { open, joining, joined };
  void finish_join_locked(std::unique_lock<std::mutex>& lock);

  const ChildFailure policy_;
  CancellationToken own_;
  CancellationToken token_;
  mutable std::mutex mutex_;
  Phase phase_ = Phase::open;
  std::size_t running_ = 0;
  std::exception_ptr first_error_;
  std::shared_ptr<FutureState<void>> joined_ = std::make_shared<FutureState<void>>();
};

template <class T>
concept group_run = requires(const T& run) {
  run.future();
  run.settled();
};

}  // namespace detail

class TaskGroup {
 public:
  explicit TaskGroup(CancellationToken parent = CancellationToken::none(),
                     ChildFailure on_failure = ChildFailure::cancel_group)
      : state_(std::make_shared<detail::GroupState>(parent, on_failure)) {}
  // Cancels the group and waits for every child to settle.
  ~TaskGroup() {
    state_->cancel();
    state_->join().wait();
  }
  TaskGroup(const TaskGroup&) = delete;
  TaskGroup& operator=(const TaskGroup&) = delete;

  // The group's token: pass it to anything started for the group.
  const CancellationToken& token() const noexcept { return state_->token(); }
  // Cancels the group's token (CancelledException); false if it was
  // cancelled already.
  bool cancel() const { return state_->cancel(); }

  // Starts a child (see the header comment); returns its future.
  template <class F>
  auto spawn(F&& f) {
    return spawn_under(token(), nullptr, std::forward<F>(f));
  }

  // Starts each callable as a child, under a token of its own; the first to
  // complete wins, the others are cancelled. Every callable must give the
  // same result type R: the result is Future<AnyResult<R>> (when.hpp).
  template <class F, class... G>
  auto when_any(F&& f, G&&... g) {
    CancellationToken race_own;
    CancellationToken race = token().merge(race_own);
    using Child = decltype(spawn_under(race, &race_own, std::forward<F>(f)));
    std::vector<Child> children;
    children.reserve(1 + sizeof...(G));
    children.push_back(spawn_under(race, &race_own, std::forward<F>(f)));
    (children.push_back(spawn_under(race, &race_own, std::forward<G>(g))), ...);
    auto any = cancellable::when_any(children);
    detail::when_complete(any.state(), [race_own] {
      race_own.cancel_with_reason("TaskGroup::when_any: another child completed first");
    });
    return any;
  }

  // Completes once every child has settled; fails with the first failure.
  Future<void> join() { return state_->join(); }
  // Children not settled yet.
  std::size_t running() const { return state_->running(); }

 private:
  template <class F>
  static decltype(auto) call(F& f, const CancellationToken& token) {
    if constexpr (std::is_invocable_v<F&, const CancellationToken&>) {
      return f(token);
    } else {
      static_assert(std::is_invocable_v<F&>, "TaskGroup::spawn(f): f takes a CancellationToken or nothing");
      return f();
    }
  }

  template <class F>
  static auto child_result(F& f, const CancellationToken& token) {
    using Ret = std::remove_cvref_t<decltype(call(f, token))>;
    if constexpr (detail::group_run<Ret>) {
      return call(f, token);
    } else if constexpr (detail::is_future_v<Ret>) {
      return call(f, token);
    } else if constexpr (std::is_void_v<Ret>) {
      call(f, token);
      return make_ready_future();
    } else {
      return make_ready_future(call(f, token));
    }
  }

  template <class F>
  auto spawn_under(const CancellationToken& token, const CancellationToken* race, F&& f) {
    using Result = decltype(child_result(f, token));
    using ChildFuture = std::remove_cvref_t<decltype(future_of(std::declval<Result&>()))>;
    using R = typename ChildFuture::value_type;
    state_->begin_child();
    auto state = state_;
    std::optional<Result> result;
    try {
      result.emplace(child_result(f, token));
    } catch (...) {
      auto error = std::current_exception();
      state->child_failed(error, nullptr);
      state->child_settled();
      return make_failed_future<R>(error);
    }
    Future<R> future = future_of(*result);
    // Over when both the outcome and the settling have come (the failure is
    // recorded first, so join() never completes without it).
    auto pending = std::make_shared<std::atomic<int>>(2);
    auto arrive = [state, pending] {
      if (pending->fetch_sub(1, std::memory_order_acq_rel) == 1) state->child_settled();
    };
    std::optional<CancellationToken> race_copy;
    if (race) race_copy = *race;
    if (!future.valid()) {
      state->child_failed(std::make_exception_ptr(std::future_error(std::future_errc::no_state)), nullptr);
      state->child_settled();
      return future;
    }
    detail::when_complete(future.state(), [state, s = future.state(), race_copy, arrive] {
      if (auto error = s->error()) state->child_failed(error, race_copy ? &*race_copy : nullptr);
      arrive();
    });
    auto settled = settled_of(*result);
    if (settled.valid()) {
      detail::when_complete(settled.state(), arrive);
    } else {
      arrive();
    }
    return future;
  }

  template <class Result>
  static auto future_of(const Result& result) {
    if constexpr (detail::group_run<Result>) {
      return result.future();
    } else {
      return result;
    }
  }
  template <class Result>
  static auto settled_of(const Result& result) {
    if constexpr (detail::group_run<Result>) {
      return result.settled();
    } else {
      return result;
    }
  }

  std::shared_ptr<detail::GroupState> state_;
};

}  // namespace cancellable
