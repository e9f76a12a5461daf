// Internal: the non-template machinery behind CancellableIsolate: launching a
// worker (process or thread), the channel the worker writes its outcome to,
// killing, reaping and progress.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <stop_token>

#include "cancellable/cancellation_token.hpp"
#include "cancellable/future.hpp"
#include "cancellable/isolate_errors.hpp"
#include "cancellable/isolate_options.hpp"

namespace cancellable::detail {

// Used inside the worker process to hand the outcome to the parent.
class ChildChannel {
 public:
  virtual ~ChildChannel() = default;
  // The stream the result is encoded into, in place in shared memory.
  virtual std::ostream& result_stream() = 0;
  // The result is complete.
  virtual void commit_result() = 0;
  // The work failed with the exception currently being handled.
  virtual void commit_current_exception() noexcept = 0;
};

// The encoded result, as the parent sees it after the worker exited (or,
// with deliver_at_commit, committed it).
struct ResultView {
  const char* data = nullptr;
  std::size_t size = 0;
};

struct LaunchSpec {
  IsolateOptions options;
  // Runs in the worker process: calls the work and encodes its outcome.
  std::function<void(ChildChannel&)> child_body;
  // Runs on a thread (thread backend): calls the work and completes the future.
  std::function<void(std::stop_token)> thread_body;
  CancellationToken token;  // its stop_token() is handed to thread_body
  // Runs in the parent on the default executor: decodes a result and
  // completes the future. May throw (the future then fails with it).
  std::function<void(ResultView)> deliver;
  // True when deliver runs no user code (void or trivially copyable result):
  // it may then run on the reaper thread, saving a hop to the executor.
  bool deliver_is_trivial = false;
  // Fails the future (the work failed, crashed or could not start).
  std::function<void(std::exception_ptr)> fail;
  // Memory the worker writes into (a JSON arena), if any: released as soon
  // as a worker process is reaped (or has committed its outcome, with
  // deliver_at_commit), before its outcome is delivered, so that
  // a caller woken by the outcome finds it free for the next run. (For the
  // thread backend: once the work returned.)
  std::shared_ptr<void> worker_memory;
  // Deliver the outcome as soon as a worker process has committed it,
  // without waiting for its exit (the kernel's teardown of a worker that
  // mapped hundreds of megabytes takes milliseconds); the worker is then
  // reaped in the background and exited() completes after that. For work
  // that leaves nothing running in the worker that could still write to
  // shared memory (worker_memory included) once it has returned.
  bool deliver_at_commit = false;
};

// One isolate run. Shared by the caller's handle, the future's cancellation
// hook and the reaper. As a WaitHelper of the run's futures, it lets a thread
// blocked in get() or exited() reap the worker itself.
class IsolateRecord : public WaitHelper {
 public:
  virtual ~IsolateRecord() = default;
  // The backend that runs the work (process or thread), once started.
  virtual Backend backend() const noexcept = 0;
  // The worker's process id (0 for the thread backend or before start).
  virtual pid_t pid() const noexcept = 0;
  virtual std::optional<Progress> progress() const = 0;
  // The token was cancelled: stops the work by its StopPolicy (SIGKILL to
  // the worker's process group now; with a grace, asks first and kills when
  // the grace runs out), or prevents the start. Safe at any time, from any
  // thread, any number of times.
  virtual void cancel_work() noexcept = 0;
  // Completes once the worker is gone and everything it held is released:
  // process reaped, shared memory unmapped and removed; for the thread
  // backend, once the work returned.
  virtual Future<ProcessExit> exited() const = 0;
};

// Throws std::invalid_argument naming the first invalid option.
// Throws std::invalid_argument for options a run cannot take: for a
// closure (Backend::pool among them), or, with for_pool_task, for a Task run
// in options.pool (which must be set, and whose PoolOptions rule the memory
// limit, the largest result and progress).
void validate_isolate_options(const IsolateOptions& options, bool for_pool_task = false);

std::shared_ptr<IsolateRecord> make_isolate_record();
// Starts the work described by spec; its outcome goes to spec.deliver or
// spec.fail exactly once (unless the record was killed first, in which case
// the future has already failed and spec.fail's call is ignored).
void start_isolate(const std::shared_ptr<IsolateRecord>& record, LaunchSpec spec);

// The backend requested by CANCELLABLE_BACKEND ("thread" or "process"), if set.
std::optional<Backend> backend_from_environment();

// Writes progress where the current worker's parent can read it.
void report_progress_impl(std::uint64_t done, std::uint64_t total, const char* stage,
                          std::size_t stage_size) noexcept;

}  // namespace cancellable::detail
