// One isolate run, from the parent's side: starting the worker (a forked
// process, or a thread), killing it, reaping it, delivering its outcome and
// releasing what it held. Split by concern:
//   isolate_launch.cpp    start: backend choice, fork, start gate, thread backend
//   isolate_reap.cpp      kill, wait and reap: the reaper thread and helping waiters
//   isolate_delivery.cpp  the outcome to the future, release, exited(), progress
//
// ## Lifecycle
// Three enumerated states, each changed only under mutex_ and only by the
// named transitions below, plus one fact (killed_: the token or the handle
// killed the run, so its future has failed already).
//
// Phase (forward only):
//   launching -> running     start_process: the worker is watched (pidfd
//                            published, reaper watching); waiters may help.
//   launching -> reaped      start_process: a step after the fork failed;
//                            abandon_child reaps the worker itself.
//   running   -> reaped      reap_and_finish, by the reap's owner.
//   any       -> finished    release_and_signal_exit: everything released,
//                            exited() completed. (From launching when no
//                            worker process was started: a thread run, a
//                            refused or failed start, killed before start.)
//   launching -> abandoned   grace_over (thread backend): asked to stop, the
//                            thread still ran when the grace ran out;
//                            exited() completed (abandoned_after_grace).
//   abandoned -> finished    the thread returned: released, exited() not
//                            completed again.
//
// Stop: how a cancel stops the work (stop_policy.hpp), under mutex_:
//   none   -> killed              cancel_work without a grace: SIGKILL now
//   none   -> asked               cancel_work with a grace, the work running:
//                                 the stop word written (a process), the
//                                 token cancelled (a thread); a timer armed
//   asked  -> killed_after_grace  grace_over, the worker not reaped: SIGKILL
//   asked  -> abandoned           grace_over, the thread still running
//   asked  -> none                the thread never started the work
// At the end, exited()'s ProcessExit::stop says which (asked: stopped).
//
// ReapOwner: who reaps the worker (process backend, while running):
//   none              -> reaper             the reaper thread saw the exit first
//   none              -> waiter             a thread waiting in exited() reaps
//   none              -> waiter_for_result  a thread waiting in get() polls the
//                                           pidfd, a wake-up fd and the commit fd
//   waiter_for_result -> none               handed back: a cancellation woke it
//                                           (wake), its poll failed, or it saw the
//                                           commit before the exit
//   waiter_for_result -> result_waiter_must_reap  the reaper saw the exit while
//                                           that thread polls: the reap stays
//                                           with the thread, whatever wakes it
//   waiter_for_result, result_waiter_must_reap -> waiter  the thread reaps
// The reaper and a waiter never both reap: the reaper reaps only from none,
// and does nothing while a waiter owns the reap.
//
// Delivery: who completes the future with the worker's outcome:
//   pending   -> at_commit       the worker signalled its commit
//                                (deliver_at_commit); the outcome is delivered
//                                before the exit, by whoever claimed it
//   at_commit -> at_commit_done  delivered; if the reap came first it left the
//                                release to the deliverer (exit_after_delivery_)
//   pending   -> after_exit      reap_and_finish: the outcome is read after
//                                the reap (not claimed at commit, not killed)
// A killed run delivers nothing (its future failed with the token's
// exception); the reap then only releases.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "cancellable/detail/isolate_runtime.hpp"
#include "cancellable/detail/timer.hpp"
#include "runner/isolate/control_block_pool.hpp"
#include "runner/process/reaper.hpp"
#include "worker/protocol/control_block.hpp"

namespace cancellable::detail {

class IsolateRun final : public IsolateRecord, public Reapable, public std::enable_shared_from_this<IsolateRun> {
 public:
  IsolateRun();
  ~IsolateRun() override;

  // IsolateRecord
  Backend backend() const noexcept override { return backend_.load(std::memory_order_acquire); }
  pid_t pid() const noexcept override { return pid_.load(std::memory_order_acquire); }
  std::optional<Progress> progress() const override;
  void cancel_work() noexcept override;
  Future<ProcessExit> exited() const override;

  // WaitHelper: a thread about to block in get() or exited().wait() reaps the
  // worker itself (see isolate_reap.cpp).
  void help_wait(const FutureStateBase& state) noexcept override;
  void wake(const FutureStateBase& state) noexcept override;

  // Reapable: the reaper thread saw the worker's exit.
  int pidfd() const noexcept override { return pidfd_; }
  void on_process_exit() noexcept override;

  // Starts the run (isolate_launch.cpp).
  void start(LaunchSpec spec);

  // The reaper thread saw the worker's commit (deliver_at_commit).
  void on_commit() noexcept;

 private:
  enum class Phase { launching, running, reaped, abandoned, finished };
  enum class Stop { none, killed, asked, killed_after_grace, abandoned };
  enum class ReapOwner { none, reaper, waiter, waiter_for_result, result_waiter_must_reap };
  enum class Delivery { pending, at_commit, at_commit_done, after_exit };

  class CommitWatch;

  // --- launch (isolate_launch.cpp)
  void start_process(bool forced);
  void start_thread();
  void start_worker_thread();
  bool refused_inside_worker() noexcept;
  void give_back_control_block() noexcept;
  void open_start_gate() noexcept;
  void abandon_child(pid_t pid, int pidfd, int error, const std::string& what) noexcept;

  // --- kill, wait and reap (isolate_reap.cpp)
  void kill_locked() noexcept;
  bool stop_locked() noexcept;
  void arm_grace_timer();
  void grace_over() noexcept;
  void take_committed_outcome(std::uint64_t watch) noexcept;
  void reap_and_finish() noexcept;
  void close_commit_fd() noexcept;

  // --- delivery and release (isolate_delivery.cpp)
  bool claim_committed_outcome_locked() noexcept;
  void deliver_claimed_outcome() noexcept;
  void deliver_committed() noexcept;
  void release_worker_memory() noexcept;
  void finish_process(const ProcessExit& exit) noexcept;
  void deliver_outcome(const ProcessExit& exit) noexcept;
  void remove_result_shm_if_claimed() noexcept;
  std::exception_ptr worker_setup_error() const;
  std::exception_ptr crash_error(const ProcessExit& exit) const;
  void fail(std::exception_ptr error) noexcept;
  void release_and_signal_exit(const ProcessExit& exit) noexcept;
  void start_progress_watch();
  void progress_tick();

  mutable std::mutex mutex_;
  // The lifecycle (see the top of this file), under mutex_.
  Phase phase_ = Phase::launching;
  ReapOwner reap_owner_ = ReapOwner::none;
  Delivery delivery_ = Delivery::pending;
  bool killed_ = false;
  Stop stop_ = Stop::none;
  std::shared_ptr<Timer> grace_timer_;
  std::optional<ProcessExit> exit_after_delivery_;  // a reap that came during an at_commit delivery

  // Descriptors and watches, under mutex_.
  int pidfd_ = -1;
  int wake_fd_ = -1;    // eventfd that ends a result waiter's wait (a cancellation)
  int commit_fd_ = -1;  // eventfd the worker writes once its outcome is committed
  std::uint64_t commit_watch_ = 0;
  std::uint64_t reaper_watch_ = 0;

  std::atomic<Backend> backend_{Backend::automatic};
  std::atomic<pid_t> pid_{0};
  long long cpu_seconds_ = 0;  // CPU time of the reaped worker, whole seconds
  std::string shm_name_;       // the result object's name: the parent's own copy
  pid_t forking_thread_ = 0;   // the thread that forked the worker (its PR_SET_PDEATHSIG parent)
  ControlRegion control_region_;
  std::unique_ptr<ControlBlock> heap_block_;  // the thread backend's block
  ControlBlock* block_ = nullptr;
  std::optional<Progress> last_progress_;
  std::optional<Progress> reported_progress_;
  bool has_progress_callback_ = false;
  std::chrono::nanoseconds progress_interval_{0};
  std::shared_ptr<Timer> progress_timer_;
  LaunchSpec spec_;
  std::shared_ptr<FutureState<ProcessExit>> exited_;
};

}  // namespace cancellable::detail
