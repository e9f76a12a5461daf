// WorkerPool: tasks run in pre-started worker processes, killed the moment
// their token is cancelled, the slot usable again at once.
//
// ## What happens
// The pool starts size + standby processes of a worker program (PoolOptions::
// worker_program: the `cancellable-worker` program, or your own that calls
// cancellable::worker_main first thing in main; see task.hpp). They are
// started with posix_spawn, not fork: starting one costs the same from a
// parent holding gigabytes as from a tiny one, and no lock of the parent's
// threads is inherited. Each worker gets one anonymous shared memory file
// (memfd) as descriptor 3 and nothing else beyond 0, 1 and 2: all other
// descriptors are closed in the child before the program starts. Arguments
// go in, results come back through that memory; the hand-over is two futex
// words, no lock a killed worker could hold. Nothing has a name in /dev/shm.
//
// run(task, args..., token, options) queues the task; a worker takes it
// when one is free (at most `size` tasks run at once). A task whose token is
// cancelled before a worker takes it never starts: the token is checked
// right before each hand-over, so this holds while one cancel() is still
// notifying many tasks, and a worker that was being handed the task lives
// on; one cancel() kills only the workers running that token's tasks at
// that moment, and no task of the token completes with a value once
// cancel() has begun. Cancelled while running, the future fails at once
// with the token's exception, the worker's process group gets SIGKILL, a
// standby worker takes the slot, and a replacement starts in the
// background as the killed worker is reaped; the next task does not wait
// for either. With a StopPolicy grace (TaskOptions::stop, PoolOptions::stop;
// stop_policy.hpp) the task is asked to stop first, its slot is free at
// once, and a worker whose task returns within the grace serves again; one
// that does not is killed when the grace runs out (by its driver). drain()
// and shutdown() end a pool's intake (PoolClosed) and stop its workers.
// map(task, inputs) sends many inputs in chunks: a worker runs a chunk's
// inputs one after another, and the results come back in input order (see
// map below). stats() counts each task once: run, killed by its cancel, or
// crashed (a worker that died before its task's cancel came). Arguments follow the rules of results (task.hpp): plain data, or
// types cereal can serialize; pointers and views do not compile.
//
// Workers run in their own process groups and die with the pool's process
// (PR_SET_PDEATHSIG, and a check at start that the parent is still there).
// What a task starts stays in its worker's group and is killed with it: on a
// cancel (whatever SIGCHLD's disposition, SIG_IGN included), when the
// worker exits, and, through the keeper, when the pool's process dies. The
// keeper is the worker program itself, started with posix_spawn as
// `PROGRAM --cancellable-keeper PID` (isolates share it): making a pool never
// forks your process, runs none of your pthread_atfork handlers, and the
// workers' shared memory is not inherited by your process's later forks
// (MADV_DONTFORK).
// The destructor fails what is queued or running (CancelledException), kills
// every worker and reaps it.
//
// ## Errors
// run()'s future fails with: the token's exception; TimeoutException
// (options.timeout); the task's own exception (standard types keep their
// type, registered ones too, others arrive as IsolateError);
// std::invalid_argument if the worker program has no task of that name;
// WorkerCrashed (the worker died during the task: signal or exit code);
// MemoryLimitExceeded (PoolOptions::memory_limit_bytes);
// CpuTimeLimitExceeded (TaskOptions::cpu_time_limit); ResultTooLarge;
// std::length_error (arguments over max_argument_bytes). The four failures
// of the worker (WorkerCrashed and the three limits) derive from
// WorkerFailed, as from a fork isolate: one catch clause for all of them.
// The pool's own errors below derive from PoolError.
// run() itself throws PoolQueueFull when max_queue tasks wait already and
// no worker is free for it (room() completes when run() would take a task:
// room in the queue, a free worker, or a degraded pool's answer), and
// PoolDegraded while the pool has stopped starting workers (respawn_budget
// failures of the program to start within respawn_period: exit, crash or
// not ready in time; kills from elsewhere and EAGAIN/ENOMEM at spawn do not
// count; it tries again after respawn_period; the message says why).
// The constructor throws PoolStartFailed if the first workers cannot
// start: the program is missing or not executable (with the errno), or it
// is not a worker program (it exited, or did not become ready within
// start_timeout); std::logic_error inside a pool worker (pools do not nest).
//
// Thread-safety: every member may be called from any thread. No user code
// runs under the pool's lock: a future completes (and its continuations run)
// with nothing held, on the pool's thread that drives the worker or, when a
// thread is blocked in the future's get() or wait() as the worker answers,
// on that thread (it reads the answer itself: one wake-up fewer). Destroying
// the pool from one of its own continuations is not allowed.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <ranges>
#include <sstream>
#include <variant>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "cancellable/cancellation_token.hpp"
#include "cancellable/crossing.hpp"
#include "cancellable/detail/completer_core.hpp"
#include "cancellable/detail/isolate_codec.hpp"
#include "cancellable/detail/pool_map.hpp"
#include "cancellable/detail/pool_submit.hpp"
#include "cancellable/future.hpp"
#include "cancellable/isolate_errors.hpp"
#include "cancellable/isolate_options.hpp"
#include "cancellable/pool_options.hpp"
#include "cancellable/task.hpp"
#include "cancellable/when.hpp"

namespace cancellable {

struct PoolStats {
  std::size_t busy = 0;      // workers running a task
  std::size_t idle = 0;      // workers ready for a task
  std::size_t starting = 0;  // workers not ready yet
  std::size_t stopping = 0;  // workers asked to stop a cancelled task, within its grace
  std::size_t queued = 0;    // tasks waiting for a worker
  std::uint64_t tasks_run = 0;        // tasks that ran to an outcome
  std::uint64_t tasks_killed = 0;     // running tasks cancelled (worker killed, at once or after a grace)
  std::uint64_t tasks_stopped = 0;    // running tasks cancelled with a grace that stopped within it
  std::uint64_t crashes = 0;          // workers that died during a task
  std::uint64_t recycles = 0;         // workers stopped by a recycle rule (or after a CPU-limited task)
  std::uint64_t start_failures = 0;   // workers that died before they were ready
  std::uint64_t workers_started = 0;  // worker processes spawned
  std::uint64_t idle_exits = 0;       // workers stopped by idle_timeout
  // Tasks submitted while a slot was free (fewer than size running, none
  // queued) that found a ready worker for it, and those that had to wait for
  // one to start (the standby was used up).
  std::uint64_t slot_ready = 0;
  std::uint64_t slot_waited = 0;
  // Over the last 1,024 tasks: time from run() to a worker taking the task,
  // and from that to its outcome, in microseconds (nearest rank).
  double queue_wait_p50_us = 0, queue_wait_p99_us = 0;
  double run_time_p50_us = 0, run_time_p99_us = 0;
};

// Base of the pool's own errors (not the task's, not its worker's failure,
// which is WorkerFailed): PoolQueueFull, PoolDegraded, PoolClosed,
// PoolStartFailed.
class PoolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// run() with max_queue tasks already waiting.
class PoolQueueFull : public PoolError {
 public:
  explicit PoolQueueFull(std::size_t max_queue);
};

// The pool stopped starting workers; what() says why.
class PoolDegraded : public PoolError {
 public:
  using PoolError::PoolError;
};

// run() after drain() or shutdown(): the pool takes no more tasks.
class PoolClosed : public PoolError {
 public:
  using PoolError::PoolError;
};

// The pool's first workers could not start; what() says why. (Formerly
// WorkerStartFailed: that name is kept, the same type.)
class PoolStartFailed : public PoolError {
 public:
  using PoolError::PoolError;
};
using WorkerStartFailed = PoolStartFailed;


// WorkerPool::map: an input failed (its task threw, or its worker died or
// hit a limit while running it). cause() is what run() would have failed
// with for that input; index() its place in the inputs.
class MapInputFailed : public std::runtime_error {
 public:
  MapInputFailed(std::size_t index, std::exception_ptr cause);
  std::size_t index() const noexcept { return index_; }
  const std::exception_ptr& cause() const noexcept { return cause_; }

 private:
  std::size_t index_;
  std::exception_ptr cause_;
};

namespace detail {

// What map's chunks share: the results, in input order, and the outcome.
template <class R>
struct MapState {
  using Out = std::conditional_t<std::is_void_v<R>, void, std::vector<R>>;
  using Slot = std::conditional_t<std::is_default_constructible_v<R>, R, std::optional<R>>;
  MapState(std::size_t inputs, std::size_t chunks, const CancellationToken& token)
      : core(token, nullptr), remaining(chunks) {
    if constexpr (!std::is_void_v<R>) slots.resize(inputs);
  }
  CompleterCore<Out> core;
  std::conditional_t<std::is_void_v<R>, std::monostate, std::vector<Slot>> slots;
  std::atomic<std::size_t> remaining;
  std::atomic<bool> decided{false};
  CancellationToken rest;  // cancelled by the first failure: stops the other chunks

  void fail(std::exception_ptr error) {
    if (decided.exchange(true, std::memory_order_acq_rel)) return;
    core.complete_error(std::move(error));
    rest.cancel_with_reason("WorkerPool::map: another input failed");
  }
  void chunk_done() {
    if (remaining.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    if (decided.exchange(true, std::memory_order_acq_rel)) return;
    if constexpr (std::is_void_v<R>) {
      core.complete();
    } else if constexpr (std::is_default_constructible_v<R>) {
      core.complete(std::move(slots));
    } else {
      std::vector<R> values;
      values.reserve(slots.size());
      for (auto& slot : slots) values.push_back(std::move(*slot));
      core.complete(std::move(values));
    }
  }
};

// One input as the task's argument tuple.
template <class... A, class Input>
std::tuple<std::decay_t<A>...> map_arguments(Input&& input) {
  if constexpr (sizeof...(A) == 1 && std::is_constructible_v<std::decay_t<A>..., Input&&>) {
    return std::tuple<std::decay_t<A>...>(std::forward<Input>(input));
  } else {
    return std::apply(
        [](auto&&... a) { return std::tuple<std::decay_t<A>...>(std::forward<decltype(a)>(a)...); },
        std::forward<Input>(input));
  }
}

}  // namespace detail

// A task started with WorkerPool::start: its result, and when it is over.
template <class R>
class PoolRun {
 public:
  PoolRun(Future<R> future, Future<StopOutcome> settled, std::shared_ptr<detail::PoolProgress> progress)
      : future_(std::move(future)), settled_(std::move(settled)), progress_(std::move(progress)) {}

  // The task's outcome (as WorkerPool::run returns it).
  const Future<R>& future() const noexcept { return future_; }
  // Completes (never fails) once nothing of the task runs any more: with
  // its outcome when its worker answered (the worker goes on to other
  // tasks); once the worker has been reaped, and its process group killed,
  // when the task was cancelled while running or its worker died (the
  // future failed before that, at once); at once for a task that never
  // started.
  // Its value says how a cancel stopped the task (stop_policy.hpp):
  // none (it answered, or never started), killed, stopped (asked, it
  // returned within the grace: its worker serves other tasks), or
  // killed_after_grace.
  const Future<StopOutcome>& settled() const noexcept { return settled_; }
  // The latest progress the task reported (report_progress), read from its
  // worker's memory while it runs and kept once it ended; nothing before
  // it reported any (or before it started).
  std::optional<Progress> progress() const { return progress_ ? detail::read_pool_progress(*progress_) : std::nullopt; }

 private:
  Future<R> future_;
  Future<StopOutcome> settled_;
  std::shared_ptr<detail::PoolProgress> progress_;
};

class WorkerPool {
 public:
  // Starts the workers and waits until they are ready (see Errors).
  explicit WorkerPool(PoolOptions options);
  // Fails what is queued or running with CancelledException, kills and
  // reaps every worker.
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // run(task, args..., [token, [options]]): runs the task in a worker. The
  // arguments must match the task's signature; the token and TaskOptions
  // are optional, in that order.
  template <class R, class... A, class... Rest>
  Future<R> run(const Task<R(A...)>& task, Rest&&... rest) {
    constexpr std::size_t n = sizeof...(A);
    static_assert(sizeof...(Rest) >= n && sizeof...(Rest) <= n + 2,
                  "WorkerPool::run(task, args..., [token, [options]]): the task's arguments, then optionally "
                  "a CancellationToken and TaskOptions");
    auto all = std::forward_as_tuple(std::forward<Rest>(rest)...);
    return run_with<R, A...>(task, all, std::make_index_sequence<n>{}, nullptr, nullptr);
  }

  // As run(), and also tells when the task is over (PoolRun::settled): a
  // caller that must know the worker it killed is gone, with what it
  // started, waits on that.
  template <class R, class... A, class... Rest>
  PoolRun<R> start(const Task<R(A...)>& task, Rest&&... rest) {
    constexpr std::size_t n = sizeof...(A);
    static_assert(sizeof...(Rest) >= n && sizeof...(Rest) <= n + 2,
                  "WorkerPool::start(task, args..., [token, [options]]): the task's arguments, then optionally "
                  "a CancellationToken and TaskOptions");
    auto all = std::forward_as_tuple(std::forward<Rest>(rest)...);
    auto settled = std::make_shared<detail::CompleterCore<StopOutcome>>(CancellationToken::none(), nullptr);
    auto progress = detail::make_pool_progress();
    auto future = run_with<R, A...>(task, all, std::make_index_sequence<n>{}, settled, progress);
    return PoolRun<R>(std::move(future), settled->future(), std::move(progress));
  }

  // map(task, inputs, [token, [options]]): runs the task once per input in
  // the pool's workers and completes with the results in input order
  // (Future<std::vector<R>>; Future<void> for a task returning void). An
  // input is the task's argument (a task of one argument) or a tuple of its
  // arguments. Inputs go to workers in chunks (MapOptions::chunk_size); a
  // worker runs a chunk's inputs one after another, so tiny tasks cost a
  // function call each, not a round trip.
  // Fails with: the token's exception (one cancel stops every chunk, queued
  // or running, as for run()); TimeoutException (options.task.timeout, for
  // the whole map); MapInputFailed for the first input that failed (its
  // index, and its task's exception or its worker's failure as cause()); the
  // other chunks are then cancelled. Throws as run() does (PoolQueueFull,
  // PoolDegraded, PoolClosed, std::invalid_argument for bad options), having
  // left nothing running; std::length_error fails it when a chunk's
  // arguments exceed max_argument_bytes; ResultTooLarge when its results
  // exceed max_result_bytes (use a smaller chunk_size).
  template <class R, class... A, class Inputs, class... Rest>
  auto map(const Task<R(A...)>& task, const Inputs& inputs, Rest&&... rest) {
    static_assert(sizeof...(A) >= 1, "WorkerPool::map: the task takes no arguments");
    static_assert(sizeof...(Rest) <= 2,
                  "WorkerPool::map(task, inputs, [token, [options]]): optionally a CancellationToken and MapOptions");
    auto all = std::forward_as_tuple(std::forward<Rest>(rest)...);
    CancellationToken token = CancellationToken::none();
    MapOptions options;
    if constexpr (sizeof...(Rest) >= 1) token = std::get<0>(all);
    if constexpr (sizeof...(Rest) >= 2) options = std::get<1>(all);
    return map_impl<R, A...>(task, inputs, std::move(token), std::move(options));
  }

  // Completes when the queue has room for one more task (at once if it has).
  Future<void> room() const;

  // Stops taking tasks (run() and start() throw PoolClosed from now on),
  // lets the queued and running ones finish, then stops the workers. The
  // future completes once every worker has been reaped. The pool stays
  // usable for stats(); its destructor does what is left.
  Future<void> drain();
  // As drain(), but queued tasks fail at once (CancelledException, never
  // started) and running ones are stopped by `running` (stop_policy.hpp):
  // their futures fail at once; with a grace each is asked to stop and
  // killed when the grace runs out; with none (the default), killed now.
  Future<void> shutdown(StopPolicy running = {});

  PoolStats stats() const;

 private:
  template <class R, class... A, class All, std::size_t... I>
  Future<R> run_with(const Task<R(A...)>& task, All& all, std::index_sequence<I...> indices,
                     std::shared_ptr<detail::CompleterCore<StopOutcome>> settled,
                     std::shared_ptr<detail::PoolProgress> progress) {
    auto call = detail::split_task_call<TaskOptions, A...>(all, indices);
    return detail::submit_pool_task<R>(impl_, task.name, std::move(call.arguments), std::move(call.token),
                                       std::move(call.options), std::move(settled), std::move(progress));
  }

  template <class R, class... A, class Inputs>
  auto map_impl(const Task<R(A...)>& task, const Inputs& inputs, CancellationToken token, MapOptions options) {
    using State = detail::MapState<R>;
    using Out = typename State::Out;
    if (options.task.on_progress) throw std::invalid_argument("WorkerPool::map: on_progress is not supported");
    CancellationToken effective = token;
    if (options.task.timeout) {
      effective = MergedCancellationToken{token, TimeoutCancellationToken(*options.task.timeout)};
      options.task.timeout.reset();
    }
    if (effective.is_cancelled()) return make_failed_future<Out>(effective.exception());
    const std::size_t n = static_cast<std::size_t>(std::ranges::distance(inputs));
    if (n == 0) {
      if constexpr (std::is_void_v<R>) {
        return make_ready_future();
      } else {
        return make_ready_future(std::vector<R>{});
      }
    }
    std::size_t chunk = options.chunk_size;
    if (chunk == 0) {
      const std::size_t workers = std::max<std::size_t>(1, detail::pool_size(*impl_));
      chunk = (n + 4 * workers - 1) / (4 * workers);
    }
    const std::size_t chunks = (n + chunk - 1) / chunk;
    auto state = std::make_shared<State>(n, chunks, effective);
    auto result = state->core.future();
    const CancellationToken chunk_token = effective.merge(state->rest);
    auto input = std::ranges::begin(inputs);
    try {
      for (std::size_t start = 0; start < n; start += chunk) {
        const std::size_t count = std::min(chunk, n - start);
        std::ostringstream encoded;
        std::vector<std::uint64_t> offsets{0};
        offsets.reserve(count + 1);
        for (std::size_t i = 0; i < count; ++i, ++input) {
          detail::encode_result(detail::map_arguments<A...>(*input), encoded);
          offsets.push_back(static_cast<std::uint64_t>(encoded.tellp()));
        }
        std::string bytes = std::move(encoded).str();
        detail::finish_map_args(bytes, offsets, task.name);
        auto encode = [bytes = std::move(bytes)](char* area, std::size_t capacity) {
          if (bytes.size() <= capacity) std::memcpy(area, bytes.data(), bytes.size());
          return bytes.size();
        };
        auto decode = [state, start, count](std::string_view answer_bytes) {
          const auto answer = detail::read_map_answer(answer_bytes);
          if constexpr (!std::is_void_v<R>) {
            for (std::size_t j = 0; j < answer.done(); ++j) {
              state->slots[start + j] = detail::decode_result<R>(detail::ResultView{
                  answer.results + answer.offsets[j], answer.offsets[j + 1] - answer.offsets[j]});
            }
          }
          if (answer.failure) throw MapInputFailed(start + answer.done(), answer.failure);
          if (answer.done() != count) throw std::runtime_error("WorkerPool::map: a chunk's answer is short");
        };
        auto progress = detail::make_pool_progress();
        auto done = detail::submit_pool_job_as<void>(impl_, detail::kMapTaskName, std::move(encode),
                                                     std::move(decode), chunk_token, options.task, nullptr, progress);
        detail::when_complete(done.state(), [state, s = done.state(), progress, start, effective] {
          auto error = s->error();
          if (!error) return state->chunk_done();
          if (state->decided.load(std::memory_order_acquire)) return;
          if (effective.is_cancelled() && error == effective.exception()) return state->fail(error);
          try {
            std::rethrow_exception(error);
          } catch (const MapInputFailed&) {
            state->fail(error);
          } catch (const WorkerFailed&) {
            // The worker died (or hit a limit) in the input it reported last.
            const auto reached = detail::read_pool_progress(*progress);
            state->fail(std::make_exception_ptr(MapInputFailed(start + (reached ? reached->done : 0), error)));
          } catch (...) {
            state->fail(error);
          }
        });
      }
    } catch (...) {
      state->rest.cancel();  // (what was queued already never starts)
      throw;
    }
    return result;
  }

  friend const std::shared_ptr<detail::PoolImpl>& detail::pool_impl_of(const WorkerPool& pool) noexcept;

  std::shared_ptr<detail::PoolImpl> impl_;
};

}  // namespace cancellable
