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
// for either. stats() counts each task once: run, killed by its cancel, or
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

#include <chrono>
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

#include "cancellable/cancellation_token.hpp"
#include "cancellable/detail/area_streambuf.hpp"
#include "cancellable/detail/completer_core.hpp"
#include "cancellable/crossing.hpp"
#include "cancellable/detail/isolate_codec.hpp"
#include "cancellable/future.hpp"
#include "cancellable/isolate_errors.hpp"
#include "cancellable/isolate_options.hpp"
#include "cancellable/merged_cancellation_token.hpp"
#include "cancellable/task.hpp"
#include "cancellable/timeout_cancellation_token.hpp"

namespace cancellable {

struct PoolOptions {
  // The worker program: cancellable-worker, or a program of yours that calls
  // worker_main. Required.
  std::filesystem::path worker_program;
  // Tasks that run at once.
  std::size_t size = 1;
  // Started, idle workers beyond size, ready to take the place of a worker
  // that was killed or recycled while its replacement starts.
  std::size_t standby = 1;
  // Tasks that may wait for a worker; run() beyond that throws PoolQueueFull.
  // Zero: no waiting room; run() succeeds while a worker is free.
  std::size_t max_queue = 1024;
  // Recycle (stop and replace) a worker after this many tasks.
  std::optional<std::size_t> recycle_after_tasks;
  // Recycle a worker whose resident memory grew more than this over what it
  // had after its first task (a soft limit, checked between tasks).
  std::optional<std::size_t> recycle_above_growth_bytes;
  // A hard limit on the memory a worker's tasks may add (RLIMIT_DATA over
  // its size at start): a task that breaches it fails with
  // MemoryLimitExceeded.
  std::optional<std::size_t> memory_limit_bytes;
  // Largest encoded arguments and result of a task (virtual reservations of
  // the shared memory; only what is written is ever backed by memory).
  std::size_t max_argument_bytes = std::size_t{256} << 20;
  std::size_t max_result_bytes = std::size_t{256} << 20;
  // A worker idle this long exits while more than `size` workers are up
  // (the standby shrinks away when the pool is not used); the standby is
  // started again with the next task.
  std::optional<std::chrono::milliseconds> idle_timeout;
  // How long a starting worker may take to become ready.
  std::chrono::milliseconds start_timeout{30'000};
  // After respawn_budget workers failed to start within respawn_period (the
  // program's own failures: not kills from elsewhere, not EAGAIN/ENOMEM,
  // which back off), the pool stops starting workers and run() throws
  // PoolDegraded; after respawn_period it tries again.
  std::size_t respawn_budget = 5;
  std::chrono::milliseconds respawn_period{60'000};
};

struct TaskOptions {
  // Wall-clock limit: the task fails with TimeoutException and its worker is
  // killed. Merged with the caller's token.
  std::optional<std::chrono::nanoseconds> timeout;
  // CPU time the task may use (whole seconds, at least 1): enforced by the
  // kernel as for a fork isolate (RLIMIT_CPU: SIGXCPU at the limit, SIGKILL
  // one second later if the task ignores or catches SIGXCPU); the task fails
  // with CpuTimeLimitExceeded. The worker's hard limit cannot be raised
  // again, so a worker that ran such a task is replaced after it (counted
  // in PoolStats::recycles).
  std::optional<std::chrono::seconds> cpu_time_limit;
  // Called on the default executor when the progress the task reports
  // (report_progress, from any thread of the task) changes, checked every
  // progress_interval while it runs, and once more as it ends if it changed
  // since: as IsolateOptions::on_progress.
  std::function<void(const Progress&)> on_progress;
  std::chrono::milliseconds progress_interval{20};
};

struct PoolStats {
  std::size_t busy = 0;      // workers running a task
  std::size_t idle = 0;      // workers ready for a task
  std::size_t starting = 0;  // workers not ready yet
  std::size_t queued = 0;    // tasks waiting for a worker
  std::uint64_t tasks_run = 0;        // tasks that ran to an outcome
  std::uint64_t tasks_killed = 0;     // running tasks cancelled (worker killed)
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
// which is WorkerFailed): PoolQueueFull, PoolDegraded, PoolStartFailed.
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

// The pool's first workers could not start; what() says why. (Formerly
// WorkerStartFailed: that name is kept, the same type.)
class PoolStartFailed : public PoolError {
 public:
  using PoolError::PoolError;
};
using WorkerStartFailed = PoolStartFailed;

namespace detail {

// One queued or running task, type-erased (see pool.cpp).
// A pool task's progress as its caller sees it (runner/pool/progress.cpp).
struct PoolProgress;
std::shared_ptr<PoolProgress> make_pool_progress();
// Calls on_progress (on the default executor) when the progress changes,
// checked every interval while the task runs. Before the task is submitted.
void watch_pool_progress(PoolProgress& progress, std::function<void(const Progress&)> on_progress,
                         std::chrono::milliseconds interval);
std::optional<Progress> read_pool_progress(const PoolProgress& progress);

struct PoolJob {
  std::string task_name;
  // Encodes the arguments into [area, area + capacity); returns the size,
  // or more than capacity if they do not fit.
  std::function<std::size_t(char* area, std::size_t capacity)> encode_args;
  // Decodes the result bytes and completes the future (may throw: the future
  // then fails with it).
  std::function<void(std::string_view)> deliver;
  std::function<void(std::exception_ptr)> fail;
  std::optional<std::chrono::seconds> cpu_time_limit;
  // The task's token (merged with its timeout): cancelled before a worker
  // takes the task, the task never starts; cancelled before its value is
  // delivered, the value is dropped.
  CancellationToken token;
  // The future's state (alive as long as the job): a thread blocked in its
  // get() takes the worker's answer itself, without a hop through the pool.
  FutureStateBase* state = nullptr;
  // Completed once nothing of the task runs any more (PoolRun::settled);
  // null when nobody asked.
  std::shared_ptr<CompleterCore<void>> settled;
  // The task's progress (PoolRun::progress, TaskOptions::on_progress); null
  // when nobody asked.
  std::shared_ptr<PoolProgress> progress;
};

class PoolImpl;

std::shared_ptr<PoolImpl> make_pool(PoolOptions options);
// Queues job; returns a handle the cancellation hook calls. Throws
// PoolQueueFull, PoolDegraded.
std::function<void()> submit_pool_job(const std::shared_ptr<PoolImpl>& pool, std::shared_ptr<PoolJob> job);
PoolStats pool_stats(const PoolImpl& pool);
Future<void> pool_room(const std::shared_ptr<PoolImpl>& pool);
void stop_pool(PoolImpl& pool) noexcept;

}  // namespace detail

// A task started with WorkerPool::start: its result, and when it is over.
template <class R>
class PoolRun {
 public:
  PoolRun(Future<R> future, Future<void> settled, std::shared_ptr<detail::PoolProgress> progress)
      : future_(std::move(future)), settled_(std::move(settled)), progress_(std::move(progress)) {}

  // The task's outcome (as WorkerPool::run returns it).
  const Future<R>& future() const noexcept { return future_; }
  // Completes (never fails) once nothing of the task runs any more: with
  // its outcome when its worker answered (the worker goes on to other
  // tasks); once the worker has been reaped, and its process group killed,
  // when the task was cancelled while running or its worker died (the
  // future failed before that, at once); at once for a task that never
  // started.
  const Future<void>& settled() const noexcept { return settled_; }
  // The latest progress the task reported (report_progress), read from its
  // worker's memory while it runs and kept once it ended; nothing before
  // it reported any (or before it started).
  std::optional<Progress> progress() const { return progress_ ? detail::read_pool_progress(*progress_) : std::nullopt; }

 private:
  Future<R> future_;
  Future<void> settled_;
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
    auto settled = std::make_shared<detail::CompleterCore<void>>(CancellationToken::none(), nullptr);
    auto progress = detail::make_pool_progress();
    auto future = run_with<R, A...>(task, all, std::make_index_sequence<n>{}, settled, progress);
    return PoolRun<R>(std::move(future), settled->future(), std::move(progress));
  }

  // Completes when the queue has room for one more task (at once if it has).
  Future<void> room() const;

  PoolStats stats() const;

 private:
  template <class R, class... A, class All, std::size_t... I>
  Future<R> run_with(const Task<R(A...)>& task, All& all, std::index_sequence<I...> indices,
                     std::shared_ptr<detail::CompleterCore<void>> settled,
                     std::shared_ptr<detail::PoolProgress> progress) {
    auto call = detail::split_task_call<TaskOptions, A...>(all, indices);
    return submit<R>(task.name, std::move(call.arguments), std::move(call.token), std::move(call.options),
                     std::move(settled), std::move(progress));
  }

  template <class R, class Arguments>
  Future<R> submit(const char* name, Arguments arguments, CancellationToken token, TaskOptions options,
                   std::shared_ptr<detail::CompleterCore<void>> settled,
                   std::shared_ptr<detail::PoolProgress> progress) {
    CancellationToken effective = token;
    if (options.timeout) effective = MergedCancellationToken{token, TimeoutCancellationToken(*options.timeout)};
    if (effective.is_cancelled()) {
      if (settled) settled->complete();  // (nothing started)
      return make_failed_future<R>(effective.exception());
    }

    if (options.cpu_time_limit && options.cpu_time_limit->count() < 1) {
      throw std::invalid_argument("WorkerPool::run: TaskOptions::cpu_time_limit must be at least one second");
    }
    if (options.on_progress && options.progress_interval.count() <= 0) {
      throw std::invalid_argument("WorkerPool::run: TaskOptions::progress_interval must be positive");
    }
    if (options.on_progress) {
      if (!progress) progress = detail::make_pool_progress();
      detail::watch_pool_progress(*progress, std::move(options.on_progress), options.progress_interval);
    }
    auto job = std::make_shared<detail::PoolJob>();
    job->task_name = name;
    job->cpu_time_limit = options.cpu_time_limit;
    job->token = effective;
    job->encode_args = [arguments = std::move(arguments)](char* area, std::size_t capacity) {
      detail::AreaStreambuf buffer(area, capacity);
      std::ostream out(&buffer);
      detail::encode_result(arguments, out);
      out.flush();
      return buffer.total();
    };
    // The job is cancelled through this handle (set once it is queued).
    auto cancel = std::make_shared<std::function<void()>>();
    auto hook_ready = std::make_shared<std::atomic<bool>>(false);
    auto core = std::make_shared<detail::CompleterCore<R>>(effective, nullptr, [cancel, hook_ready] {
      if (hook_ready->load(std::memory_order_acquire)) (*cancel)();
    });
    job->deliver = [core](std::string_view bytes) {
      if constexpr (std::is_void_v<R>) {
        core->complete();
      } else {
        core->complete(detail::decode_result<R>(detail::ResultView{bytes.data(), bytes.size()}));
      }
    };
    job->fail = [core](std::exception_ptr error) { core->complete_error(std::move(error)); };
    job->state = core->state().get();
    job->settled = std::move(settled);
    job->progress = std::move(progress);
    auto future = core->future();
    *cancel = detail::submit_pool_job(impl_, job);
    hook_ready->store(true, std::memory_order_release);
    // Cancelled between the token's check and the hook being armed: the
    // future failed already; take the job back now.
    if (core->was_cancelled()) (*cancel)();
    return future;
  }

  std::shared_ptr<detail::PoolImpl> impl_;
};

}  // namespace cancellable
