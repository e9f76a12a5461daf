// CancellableIsolate: run work that cannot cooperate (a huge parse, a runaway
// loop, a crash-prone parser) in a forked worker process, and kill it the
// moment its token is cancelled.
//
// ## What happens
// run(fn, token, options) forks the calling process. The child runs fn() on a
// copy-on-write copy of the parent's memory, so fn and everything it captures
// need no serialization. Its result is encoded in place into shared memory
// (Boost.Interprocess) and decoded by the parent after the child has exited;
// no pipe carries it. When the token is cancelled, or the timeout passes,
// the child's whole process group gets SIGKILL at once and the future fails
// with the token's exception (the same std::exception_ptr). With a
// StopPolicy grace (IsolateOptions::stop, stop_policy.hpp) the work is asked
// to stop first and killed when the grace runs out; the future fails at
// once either way. One reaper thread
// watches every child through a pidfd and reaps it in the background: no
// zombie remains, and the shared memory is released. A thread blocked in
// get() or exited().wait() (without a timeout) does not wait for the reaper:
// it waits for the worker's exit itself and reaps it, as a bare waitpid()
// would; the futures it completes there run their continuations on it, as on
// any completing thread. A cancellation still wakes it at once.
//
// ## Fork in a threaded program: what the child may touch
// fork() copies the whole address space but only the calling thread. Every
// lock that another thread of the parent held at that moment stays locked
// forever in the child. glibc makes malloc safe across fork, so fn may
// allocate; but fn must not take locks the rest of the program uses (its own
// mutexes, std::cout's, a logging library's), must not wait for other threads
// (they do not exist in the child: CancellableFuture::from, timers and thread
// pools do not work there), and must not rely on open files: inherited
// descriptors other than 0, 1 and 2 are closed. Open what you need inside fn.
// The child runs with default signal dispositions and an empty signal mask,
// in its own process group, and dies with its parent (PR_SET_PDEATHSIG, plus
// a check that the parent is still there). It only leaves through _exit: no
// atexit handlers, no static destructors, no flushing of the parent's stdio
// buffers.
//
// What the work starts (children, a double fork) stays in the worker's
// process group and is killed with it: on a cancel (whatever SIGCHLD's
// disposition), after the worker exits, and, through the keeper process
// (shared with pools: a worker program exec'd with posix_spawn when one is
// known, see WorkerPool; otherwise a fork of this process), when the parent
// dies. Processes that leave the group (setsid) are not covered.
//
// Launch: everything that can fail for want of descriptors or memory happens
// before the fork. After it, the child waits at a start gate until the
// parent holds its pidfd and has checked (waitid) that it is its own child;
// any later failure kills and reaps the child and fails the future. A host
// that ignores SIGCHLD is supported: no process or group is signalled unless
// waitid confirms it is an unreaped child of ours.
//
// Isolates do not nest: inside a worker, run() fails with std::logic_error
// before forking (the library's threads do not exist there).
//
// Gotcha: PR_SET_PDEATHSIG is tied to the *thread* that forked. If the thread
// that called run() exits while the isolate runs, the child is killed and the
// future fails with WorkerCrashed (killed by SIGKILL; the message says that
// the thread that started it exited, and names it). Call run() from
// long-lived threads. The worker pool (pool.hpp) starts workers with
// posix_spawn and avoids these constraints; prefer it when the parent holds
// many locks or a lot of memory (fork cost grows with the parent's size).
//
// ## Errors
// The future fails with: the token's exception; TimeoutException (timeout);
// the exception fn threw (types of <stdexcept>, <new>, CancelledException,
// TimeoutException and registered types keep their type, others arrive as
// IsolateError); WorkerCrashed (the child died without a result);
// MemoryLimitExceeded, CpuTimeLimitExceeded (SIGXCPU, or the kernel's
// SIGKILL at the hard limit one second later), ResultTooLarge (limits; an
// exception's what() is cut to fit max_result_bytes); std::system_error if
// the process backend was forced and fork failed, if a step before or after
// the fork ran out of resources (the message names the step), or if the
// worker could not set itself up (setpgid, setrlimit); std::logic_error
// inside a worker (no nesting).
//
// ## Thread fallback
// With Backend::thread, CANCELLABLE_BACKEND=thread, or (automatic) when fork
// fails with EAGAIN, ENOMEM or ENOSYS, fn runs on a thread of its own.
// Cancellation then fails the future at once but cannot stop fn, which may
// take a std::stop_token to stop early. Isolate::backend() tells which ran.
//
// ## Tasks, and the worker pool
// A Task (task.hpp: a function registered by name) runs like a closure with
// run(task, args..., token, options). With Backend::pool it goes to
// options.pool, a WorkerPool of pre-started worker programs (nothing is
// forked: see pool.hpp); with the other backends the function registered
// for it in this program runs as a closure would. A closure cannot run in a
// pool's worker (another program): run(fn) with Backend::pool throws
// std::invalid_argument.
//
// Thread-safety: run() may be called from any thread (see the gotcha above).
// An Isolate handle is a cheap copyable value; all its members are const.
// Lifetime: a running isolate keeps itself alive; dropping the handle or the
// future neither waits for nor kills the worker (cancel the token to kill).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "cancellable/cancellation_token.hpp"
#include "cancellable/detail/completer_core.hpp"
#include "cancellable/crossing.hpp"
#include "cancellable/detail/isolate_codec.hpp"
#include "cancellable/detail/isolate_runtime.hpp"
#include "cancellable/detail/isolate_spawn.hpp"
#include "cancellable/detail/pool_submit.hpp"
#include "cancellable/future.hpp"
#include "cancellable/isolate_errors.hpp"
#include "cancellable/isolate_options.hpp"
#include "cancellable/merged_cancellation_token.hpp"
#include "cancellable/pool_options.hpp"
#include "cancellable/task.hpp"
#include "cancellable/timeout_cancellation_token.hpp"

namespace cancellable {

// Called from inside the work of an isolate (any backend) or of a pool task:
// records how far it got. No system call: the parent reads it from the
// worker's memory (Isolate::progress, PoolRun::progress, on_progress). In a
// worker process (Backend::process, a pool worker) any thread of the work
// may call it; with Backend::thread, the work's own thread. Does nothing
// outside an isolate or a pool task.
inline void report_progress(std::uint64_t done, std::uint64_t total, std::string_view stage = {}) {
  detail::report_progress_impl(done, total, stage.data(), stage.size());
}

// A running (or finished) isolate: its result, and what can be observed while
// it runs.
template <class R>
class Isolate {
 public:
  Isolate(Future<R> future, std::shared_ptr<detail::IsolateRecord> record)
      : future_(std::move(future)), record_(std::move(record)) {}

  const Future<R>& future() const noexcept { return future_; }
  // Backend::process or Backend::thread: what runs (ran) the work. For a run
  // that never started (token already cancelled), Backend::automatic.
  Backend backend() const noexcept { return record_ ? record_->backend() : Backend::automatic; }
  // The worker's process id; 0 for the thread backend.
  pid_t pid() const noexcept { return record_ ? record_->pid() : 0; }
  // The latest progress reported by the work, if any.
  std::optional<Progress> progress() const {
    return record_ ? record_->progress() : std::nullopt;
  }
  // Completes when the worker is gone and all it held is released (process
  // reaped, shared memory removed), with how it ended. Ready at once for a run
  // that never started.
  Future<ProcessExit> exited() const {
    return record_ ? record_->exited() : make_ready_future(ProcessExit{});
  }
  // Completes (never fails) once nothing of this run is running any more:
  // the moment exited() completes, with how a cancel stopped the work
  // (ProcessExit::stop; StopOutcome::none when it was not stopped). The one
  // name for it across isolates and pools (PoolRun::settled).
  Future<StopOutcome> settled() const {
    return exited().then([](const ProcessExit& exit) { return exit.stop; });
  }

 private:
  Future<R> future_;
  std::shared_ptr<detail::IsolateRecord> record_;
};


struct CancellableIsolate {
  // Runs fn in a worker and returns a handle to it; see the header comment.
  // Throws std::invalid_argument for invalid options (a negative timeout or
  // CPU time limit, a progress_interval that is not positive, Backend::pool).
  template <class F, class R = std::decay_t<typename detail::isolate_result_t<std::decay_t<F>>::type>>
    requires(!detail::is_task_v<std::remove_cvref_t<F>>)
  static Isolate<R> spawn(F&& fn, const CancellationToken& token = CancellationToken::none(),
                          IsolateOptions options = {}) {
    return detail::spawn_isolate<R>(std::forward<F>(fn), token, std::move(options), nullptr);
  }

  // spawn(fn, token, options).future().
  template <class F>
    requires(!detail::is_task_v<std::remove_cvref_t<F>>)
  static auto run(F&& fn, const CancellationToken& token = CancellationToken::none(),
                  IsolateOptions options = {}) {
    return spawn(std::forward<F>(fn), token, std::move(options)).future();
  }

  // run(task, args..., [token, [options]]): runs a registered task (see
  // task.hpp) with the same semantics as a closure. With Backend::pool it
  // runs in a worker of options.pool (WorkerPool::run with options.timeout,
  // cpu_time_limit, on_progress and progress_interval); with the other backends, the function registered
  // for the task in this program runs in a forked worker or a thread, as a
  // closure would. Throws std::invalid_argument: Backend::pool without a
  // pool, or with memory_limit_bytes or max_result_bytes set (the pool's
  // options rule those); another backend and no function of
  // that name registered in this program.
  template <class R, class... A, class... Rest>
  static Future<R> run(const Task<R(A...)>& task, Rest&&... rest) {
    constexpr std::size_t n = sizeof...(A);
    static_assert(sizeof...(Rest) >= n && sizeof...(Rest) <= n + 2,
                  "CancellableIsolate::run(task, args..., [token, [options]]): the task's arguments, then "
                  "optionally a CancellationToken and IsolateOptions");
    auto all = std::forward_as_tuple(std::forward<Rest>(rest)...);
    return run_task<R, A...>(task, all, std::make_index_sequence<n>{});
  }

 private:
  template <class R, class... A, class All, std::size_t... I>
  static Future<R> run_task(const Task<R(A...)>& task, All& all, std::index_sequence<I...> indices) {
    auto call = detail::split_task_call<IsolateOptions, A...>(all, indices);
    auto& [arguments, token, options] = call;
    if (options.backend == Backend::pool) {
      detail::validate_isolate_options(options, true);
      TaskOptions task_options;
      task_options.timeout = options.timeout;
      task_options.cpu_time_limit = options.cpu_time_limit;
      task_options.on_progress = std::move(options.on_progress);
      task_options.progress_interval = options.progress_interval;
      // (Left at its default, the pool's PoolOptions::stop rules.)
      if (options.stop.grace.count() > 0 || options.stop.terminate_first) task_options.stop = options.stop;
      return detail::submit_pool_task<R>(detail::pool_impl_of(*options.pool), task.name, std::move(arguments),
                                         token, std::move(task_options), nullptr, nullptr);
    }
    const detail::TaskInvoker invoker = detail::find_pool_task(task.name);
    if (invoker == nullptr) {
      throw std::invalid_argument(std::string("CancellableIsolate::run: no function is registered for task '") +
                                  task.name + "' in this program (CANCELLABLE_TASK); only Backend::pool "
                                  "runs it elsewhere");
    }
    std::ostringstream encoded;
    detail::encode_result(arguments, encoded);
    return spawn(
               [invoker, bytes = std::move(encoded).str()]() -> R {
                 std::ostringstream out;
                 invoker(bytes.data(), bytes.size(), out);
                 if constexpr (!std::is_void_v<R>) {
                   const std::string result = std::move(out).str();
                   return detail::decode_result<R>(detail::ResultView{result.data(), result.size()});
                 }
               },
               token, std::move(options))
        .future();
  }
};

// Runs callback(message) in an isolate: CancellableIsolate::run of it.
template <class Callback, class Message>
auto cancellable_compute(Callback callback, Message message,
                         const CancellationToken& token = CancellationToken::none(),
                         IsolateOptions options = {}) {
  return CancellableIsolate::run(
      [callback = std::move(callback), message = std::move(message)]() mutable {
        return callback(message);
      },
      token, std::move(options));
}

}  // namespace cancellable
