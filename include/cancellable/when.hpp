// when_all, when_all_settled, when_any: one future for many.
//
// Who uses them: code that starts several operations and waits for them
// together (Dart's Future.wait and Future.any, JavaScript's Promise.all,
// allSettled and race, folly's collectAll and collectAny):
//
//   auto both = when_all(client.read(a, token), client.read(b, token));
//   auto [body_a, body_b] = both.get();
//
// Forms and results (Future<void> works in all of them):
//   - when_all(f...)         -> Future<std::tuple<V...>>, V = T, or
//                               std::monostate for a Future<void>;
//     when_all(range)        -> Future<std::vector<T>> (Future<void> for a
//                               range of Future<void>), values in range order.
//     Fails as soon as any input fails, with that input's exception (the
//     same std::exception_ptr; Dart's eagerError: true); the first failure
//     in time wins, and for inputs that had all completed already, the first
//     in order. Does not wait for the others.
//   - when_all_settled(f...) -> Future<std::tuple<Future<T>...>>;
//     when_all_settled(range)-> Future<std::vector<Future<T>>>: completes,
//     never fails, once every input has completed; each element is that
//     input, complete (read it with get() or exception()).
//   - when_any(f, g...), when_any(range) (all of one type T)
//                            -> Future<AnyResult<T>>: the first input to
//     complete, its index and value; if that input failed, fails with its
//     exception. An empty range fails with std::invalid_argument.
//   The range forms also take a token: cancelled first, the result fails at
//   once with the token's exception (the inputs go on: cancel their own
//   tokens to stop them, or use a TaskGroup, task_group.hpp). Once the result
//   is complete, nothing of it is attached to the token.
//
// Guarantees: an empty when_all is ready at once (an empty vector or
// tuple). Inputs that are already complete are read without a continuation
// (when_all of ready futures costs about a loop of get(); bench `when_all`).
// The inputs are not changed: other copies may wait on them, attach
// continuations or be passed to another combinator.
//
// Errors: std::future_error(no_state) at the call for an input that is not
// valid().
// Thread-safety: the inputs may complete on any threads, concurrently. The
// result completes on the thread that completes the deciding input (or the
// cancelling thread), as any continuation does (future.hpp).
// Lifetime: the result holds what it needs; the inputs keep it alive until
// they complete. Dropping the result neither cancels nor waits for inputs.
#pragma once

#include <atomic>
#include <cstddef>
#include <exception>
#include <future>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <stdexcept>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "cancellable/cancellation_token.hpp"
#include "cancellable/detail/completer_core.hpp"
#include "cancellable/future.hpp"

namespace cancellable {

// when_any's result: which input completed first, and its value.
template <class T>
struct AnyResult {
  std::size_t index = 0;
  T value;
};
template <>
struct AnyResult<void> {
  std::size_t index = 0;
};

namespace detail {

// A Future<void>'s place in a tuple.
template <class T>
using slot_t = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

template <class T>
const std::shared_ptr<FutureState<T>>& checked_state_of(const Future<T>& f) {
  if (!f.valid()) throw std::future_error(std::future_errc::no_state);
  return f.state();
}

// Runs fn() once state is complete: inline when it already is (no
// continuation is stored), otherwise on the completing thread.
template <class T, class Fn>
void when_complete(const std::shared_ptr<FutureState<T>>& state, Fn&& fn) {
  if (state->is_ready()) {
    fn();
  } else {
    state->subscribe(std::forward<Fn>(fn));
  }
}

template <class Range>
using range_future_t = std::remove_cvref_t<std::ranges::range_reference_t<Range>>;

template <class Range>
concept future_range = std::ranges::input_range<Range> && is_future_v<range_future_t<Range>>;

// The states of a range of futures, checked.
template <class T, class Range>
std::vector<std::shared_ptr<FutureState<T>>> states_of(Range&& futures) {
  std::vector<std::shared_ptr<FutureState<T>>> states;
  if constexpr (std::ranges::sized_range<Range>) states.reserve(std::ranges::size(futures));
  for (const auto& f : futures) states.push_back(checked_state_of(f));
  return states;
}

// What when_all over a range shares between its inputs' continuations.
template <class T>
struct AllOfRange {
  using Out = std::conditional_t<std::is_void_v<T>, void, std::vector<T>>;
  AllOfRange(std::size_t n, const CancellationToken& token) : core(token, nullptr), remaining(n) {
    if constexpr (!std::is_void_v<T>) slots.resize(n);
  }
  CompleterCore<Out> core;
  std::conditional_t<std::is_void_v<T>, std::monostate, std::vector<std::optional<T>>> slots;
  std::atomic<std::size_t> remaining;
  std::atomic<bool> decided{false};

  void fail(std::exception_ptr error) {
    if (!decided.exchange(true, std::memory_order_acq_rel)) core.complete_error(std::move(error));
  }
  void arrived() {
    if (remaining.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    if (decided.exchange(true, std::memory_order_acq_rel)) return;
    if constexpr (std::is_void_v<T>) {
      core.complete();
    } else {
      std::vector<T> values;
      values.reserve(slots.size());
      for (auto& slot : slots) values.push_back(std::move(*slot));
      core.complete(std::move(values));
    }
  }
};

}  // namespace detail

// ---- when_all --------------------------------------------------------------

template <detail::future_range Range>
auto when_all(Range&& futures, const CancellationToken& token = CancellationToken::none()) {
  using T = typename detail::range_future_t<Range>::value_type;
  using Out = std::conditional_t<std::is_void_v<T>, void, std::vector<T>>;
  if constexpr (std::ranges::forward_range<Range>) {
    // All complete already (the common case for a batch that was awaited
    // elsewhere): read them where they are, with no copy of their states,
    // no continuation and no shared state.
    bool all_ready = true;
    std::size_t n = 0;
    for (const auto& f : futures) {
      all_ready = detail::checked_state_of(f)->is_ready() && all_ready;
      ++n;
    }
    if (all_ready) {
      if (token.is_cancelled()) return make_failed_future<Out>(token.exception());
      if constexpr (std::is_void_v<T>) {
        for (const auto& f : futures)
          if (auto error = f.state()->error()) return make_failed_future<Out>(error);
        return make_ready_future();
      } else {
        std::vector<T> values;
        values.reserve(n);
        for (const auto& f : futures) {
          const auto& s = *f.state();
          if (auto error = s.error()) return make_failed_future<Out>(error);
          values.push_back(s.value());
        }
        return make_ready_future(std::move(values));
      }
    }
  }
  auto states = detail::states_of<T>(std::forward<Range>(futures));
  if (token.is_cancelled()) return make_failed_future<Out>(token.exception());
  if (states.empty()) {
    if constexpr (std::is_void_v<T>) {
      return make_ready_future();
    } else {
      return make_ready_future(std::vector<T>{});
    }
  }

  auto all = std::make_shared<detail::AllOfRange<T>>(states.size(), token);
  auto result = all->core.future();
  for (std::size_t i = 0; i < states.size(); ++i) {
    const auto& s = states[i];
    detail::when_complete(s, [all, s, i] {
      if (auto error = s->error()) {
        all->fail(error);
        return;
      }
      if constexpr (!std::is_void_v<T>) all->slots[i].emplace(s->value());
      all->arrived();
    });
  }
  return result;
}

template <class... T>
Future<std::tuple<detail::slot_t<T>...>> when_all(const Future<T>&... futures) {
  using Out = std::tuple<detail::slot_t<T>...>;
  auto states = std::make_tuple(detail::checked_state_of(futures)...);
  struct All {
    detail::CompleterCore<Out> core{CancellationToken::none(), nullptr};
    std::tuple<std::optional<detail::slot_t<T>>...> slots;
    std::atomic<std::size_t> remaining{sizeof...(T)};
    std::atomic<bool> decided{false};
  };
  if constexpr (sizeof...(T) == 0) {
    return make_ready_future(Out{});
  } else {
    auto all = std::make_shared<All>();
    auto result = all->core.future();
    auto arrived = [all] {
      if (all->remaining.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
      if (all->decided.exchange(true, std::memory_order_acq_rel)) return;
      all->core.complete(std::apply([](auto&... slot) { return Out(std::move(*slot)...); }, all->slots));
    };
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (detail::when_complete(std::get<I>(states),
                             [all, arrived, s = std::get<I>(states)] {
                               if (auto error = s->error()) {
                                 if (!all->decided.exchange(true, std::memory_order_acq_rel))
                                   all->core.complete_error(error);
                                 return;
                               }
                               using V = std::tuple_element_t<I, std::tuple<T...>>;
                               if constexpr (std::is_void_v<V>) {
                                 std::get<I>(all->slots).emplace();
                               } else {
                                 std::get<I>(all->slots).emplace(s->value());
                               }
                               arrived();
                             }),
       ...);
    }(std::index_sequence_for<T...>{});
    return result;
  }
}

// ---- when_all_settled ------------------------------------------------------

template <detail::future_range Range>
auto when_all_settled(Range&& futures, const CancellationToken& token = CancellationToken::none()) {
  using F = detail::range_future_t<Range>;
  using T = typename F::value_type;
  std::vector<F> inputs;
  if constexpr (std::ranges::sized_range<Range>) inputs.reserve(std::ranges::size(futures));
  for (const auto& f : futures) {
    detail::checked_state_of(f);
    inputs.push_back(f);
  }
  if (token.is_cancelled()) return make_failed_future<std::vector<F>>(token.exception());
  struct Settled {
    Settled(std::vector<F> in, const CancellationToken& t)
        : core(t, nullptr), inputs(std::move(in)), remaining(inputs.size()) {}
    detail::CompleterCore<std::vector<F>> core;
    std::vector<F> inputs;
    std::atomic<std::size_t> remaining;
  };
  const std::size_t n = inputs.size();
  if (n == 0) return make_ready_future(std::vector<F>{});
  auto settled = std::make_shared<Settled>(std::move(inputs), token);
  auto result = settled->core.future();
  for (std::size_t i = 0; i < n; ++i) {
    detail::when_complete(std::shared_ptr<detail::FutureState<T>>(settled->inputs[i].state()), [settled] {
      if (settled->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) settled->core.complete(settled->inputs);
    });
  }
  return result;
}

template <class... T>
Future<std::tuple<Future<T>...>> when_all_settled(const Future<T>&... futures) {
  using Out = std::tuple<Future<T>...>;
  (detail::checked_state_of(futures), ...);
  if constexpr (sizeof...(T) == 0) {
    return make_ready_future(Out{});
  } else {
    struct Settled {
      explicit Settled(Out in) : inputs(std::move(in)) {}
      detail::CompleterCore<Out> core{CancellationToken::none(), nullptr};
      Out inputs;
      std::atomic<std::size_t> remaining{sizeof...(T)};
    };
    auto settled = std::make_shared<Settled>(Out(futures...));
    auto result = settled->core.future();
    auto arrived = [settled] {
      if (settled->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) settled->core.complete(settled->inputs);
    };
    (detail::when_complete(futures.state(), arrived), ...);
    return result;
  }
}

// ---- when_any --------------------------------------------------------------

template <detail::future_range Range>
auto when_any(Range&& futures, const CancellationToken& token = CancellationToken::none()) {
  using T = typename detail::range_future_t<Range>::value_type;
  auto states = detail::states_of<T>(std::forward<Range>(futures));
  if (states.empty()) {
    return make_failed_future<AnyResult<T>>(
        std::make_exception_ptr(std::invalid_argument("when_any: no futures to wait for")));
  }
  if (token.is_cancelled()) return make_failed_future<AnyResult<T>>(token.exception());
  struct Any {
    explicit Any(const CancellationToken& t) : core(t, nullptr) {}
    detail::CompleterCore<AnyResult<T>> core;
    std::atomic<bool> decided{false};
  };
  auto any = std::make_shared<Any>(token);
  auto result = any->core.future();
  for (std::size_t i = 0; i < states.size() && !any->decided.load(std::memory_order_acquire); ++i) {
    const auto& s = states[i];
    detail::when_complete(s, [any, s, i] {
      if (any->decided.exchange(true, std::memory_order_acq_rel)) return;
      if (auto error = s->error()) {
        any->core.complete_error(error);
      } else if constexpr (std::is_void_v<T>) {
        any->core.complete(AnyResult<void>{i});
      } else {
        any->core.complete(AnyResult<T>{i, s->value()});
      }
    });
  }
  return result;
}

template <class T, class... U>
  requires(std::is_same_v<T, U> && ...)
Future<AnyResult<T>> when_any(const Future<T>& first, const Future<U>&... rest) {
  return when_any(std::vector<Future<T>>{first, rest...});
}

}  // namespace cancellable
