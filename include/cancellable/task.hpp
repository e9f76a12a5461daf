// Tasks for the worker pool: named functions that a worker program runs for
// its parent (see pool.hpp).
//
// A task is declared once, in a header both programs include, by its name
// and signature:
//
//   inline constexpr cancellable::Task<int(int, int)> add_task{"add"};
//
// and defined in the worker program (which may be the parent's own
// executable) by registering a function of that signature:
//
//   int add(int a, int b) { return a + b; }
//   CANCELLABLE_TASK(add_task, add);
//
// The parent runs it with pool.run(add_task, 2, 3, token). Arguments and
// the result cross with the isolate codec (plain data by its bytes,
// everything else with cereal; nothing holding addresses compiles), through
// memory the parent and the worker share. Exceptions the function throws
// arrive in the parent as for CancellableIsolate::run (standard types keep
// their type; register your own with register_isolate_exception).
//
// A worker program calls worker_main(argc, argv) first thing in main():
// started by a pool, it serves tasks until the pool stops it and never
// returns; started otherwise, it returns at once and main goes on. The
// `cancellable-worker` program is such a program with the built-in tasks
// (builtin_tasks.hpp).
//
// Thread-safety: registration happens during static initialisation (or
// before the first task runs); names must be unique within a program (a
// second registration of a name is ignored). Tasks run one at a time on the
// worker's main thread.
#pragma once

#include <cstddef>
#include <ostream>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "cancellable/cancellation_token.hpp"
#include "cancellable/crossing.hpp"
#include "cancellable/detail/isolate_codec.hpp"

namespace cancellable {

template <class Signature>
struct Task;

// A task's name and signature: the parent's handle to a function registered
// in the worker program.
template <class R, class... Args>
struct Task<R(Args...)> {
  using result_type = R;
  using arguments = std::tuple<std::decay_t<Args>...>;
  constexpr explicit Task(const char* task_name) : name(task_name) {}
  const char* name;
};

// In a worker program's main(), first: serves a pool if the program was
// started as one's worker (never returns then); returns otherwise.
void worker_main(int argc, char** argv);

namespace detail {

// Decodes the arguments, calls the function, encodes the result.
using TaskInvoker = void (*)(const char* args, std::size_t args_bytes, std::ostream& result);

// Adds name to this program's tasks; false if it was there already.
bool register_pool_task(std::string_view name, TaskInvoker invoker);
// The function registered as name in this program; null if there is none.
TaskInvoker find_pool_task(std::string_view name);

// The parts of a call run(task, args..., [token, [options]]): the task's
// arguments A... (decayed copies), then optionally a token and Options.
template <class Options, class... A>
struct TaskCall {
  std::tuple<std::decay_t<A>...> arguments;
  CancellationToken token = CancellationToken::none();
  Options options{};
};

template <class Options, class... A, class All, std::size_t... I>
TaskCall<Options, A...> split_task_call(All& all, std::index_sequence<I...>) {
  constexpr std::size_t n = sizeof...(A);
  constexpr std::size_t given = std::tuple_size_v<All>;
  static_assert(given >= n && given <= n + 2,
                "run(task, args..., [token, [options]]): the task's arguments, then optionally a "
                "CancellationToken and options");
  TaskCall<Options, A...> call{
      std::tuple<std::decay_t<A>...>(std::forward<std::tuple_element_t<I, All>>(std::get<I>(all))...)};
  if constexpr (given > n) call.token = std::get<n>(all);
  if constexpr (given > n + 1) call.options = std::get<n + 1>(all);
  return call;
}

template <class T>
inline constexpr bool is_task_v = false;
template <class R, class... Args>
inline constexpr bool is_task_v<Task<R(Args...)>> = true;

template <auto Fn, class R, class... Args>
void invoke_pool_task(const char* args, std::size_t args_bytes, std::ostream& result) {
  auto arguments = decode_result<std::tuple<std::decay_t<Args>...>>(ResultView{args, args_bytes});
  if constexpr (std::is_void_v<R>) {
    std::apply(Fn, std::move(arguments));
  } else {
    encode_result<R>(std::apply(Fn, std::move(arguments)), result);
  }
}

template <auto Fn, class R, class... Args>
bool register_task(const Task<R(Args...)>& task) {
  static_assert(std::is_invocable_r_v<R, decltype(Fn), std::decay_t<Args>...>,
                "CANCELLABLE_TASK: the function cannot be called with the task's arguments, or does not "
                "return its result type");
  return register_pool_task(task.name, &invoke_pool_task<Fn, R, Args...>);
}

}  // namespace detail
}  // namespace cancellable

#define CANCELLABLE_TASK_CONCAT2(a, b) a##b
#define CANCELLABLE_TASK_CONCAT(a, b) CANCELLABLE_TASK_CONCAT2(a, b)
// Registers function (a function, not a lambda) as task (a Task<R(Args...)>)
// in this program. At namespace scope.
#define CANCELLABLE_TASK(task, function)                                                      \
  [[maybe_unused]] static const bool CANCELLABLE_TASK_CONCAT(cancellable_task_registered_, \
                                                             __COUNTER__) =                \
      ::cancellable::detail::register_task<&function>(task)
