// Killing, waiting for and reaping an isolate's worker process: the reaper
// thread, and threads blocked in get() or exited() that reap the worker
// themselves. See isolate_run.hpp for the lifecycle (ReapOwner).
#include <poll.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "cancellable/detail/library_thread.hpp"
#include "cancellable/executor.hpp"
#include "runner/isolate/isolate_run.hpp"
#include "runner/process/keeper.hpp"
#include "runner/process/worker_process.hpp"
#include "worker/child_entry.hpp"

namespace cancellable::detail {

void IsolateRun::cancel_work() noexcept {
  bool arm;
  {
    std::lock_guard lock(mutex_);
    killed_ = true;
    arm = stop_locked();
  }
  if (arm) arm_grace_timer();
}

// Under mutex_, the run killed_: applies the StopPolicy to the running
// work. True when a grace timer must be armed (with the lock released).
// Before the worker runs, this kills (or does nothing: the start sees
// killed_ and starts nothing, or stops what it started: see start_process).
bool IsolateRun::stop_locked() noexcept {
  if (stop_ != Stop::none) return false;
  const bool graded = spec_.options.stop.grace.count() > 0;
  const Backend backend = backend_.load(std::memory_order_relaxed);
  if (backend == Backend::process && phase_ == Phase::running) {
    if (graded) {
      stop_ = Stop::asked;
      ask_worker_to_stop(*block_, kIsolateRun, pidfd_, pid_.load(std::memory_order_relaxed),
                         spec_.options.stop.terminate_first);
      return true;
    }
    stop_ = Stop::killed;
    kill_locked();
    return false;
  }
  if (backend == Backend::thread && phase_ == Phase::launching && graded) {
    stop_ = Stop::asked;  // (the thread's token is the run's: cancelled already)
    return true;
  }
  kill_locked();
  return false;
}

void IsolateRun::arm_grace_timer() {
  std::chrono::nanoseconds grace;
  {
    std::lock_guard lock(mutex_);
    grace = spec_.options.stop.grace;
  }
  std::shared_ptr<Timer> timer;
  try {
    timer = start_timer(grace, [weak = weak_from_this()] {
      if (auto self = weak.lock()) self->grace_over();
    });
  } catch (...) {
    // No timer (out of memory): no grace either.
    grace_over();
    return;
  }
  std::lock_guard lock(mutex_);
  if (phase_ == Phase::finished) {
    timer->cancel();
    return;
  }
  grace_timer_ = std::move(timer);
}

// The timer thread: the grace has run out.
void IsolateRun::grace_over() noexcept {
  {
    std::lock_guard lock(mutex_);
    if (stop_ != Stop::asked) return;
    if (backend_.load(std::memory_order_relaxed) == Backend::process) {
      if (phase_ < Phase::reaped) {
        stop_ = Stop::killed_after_grace;
        kill_locked();
      }
      return;
    }
    if (phase_ != Phase::launching) return;  // the thread has returned
    stop_ = Stop::abandoned;
    phase_ = Phase::abandoned;
  }
  // The thread runs on; exited() says it was left. Its end releases the
  // rest (release_and_signal_exit) without completing exited() again.
  ProcessExit exit;
  exit.stop = StopOutcome::abandoned_after_grace;
  exited_->set_value(exit);
}

void IsolateRun::kill_locked() noexcept {
  const pid_t pid = pid_.load(std::memory_order_relaxed);
  if (pid <= 0 || phase_ >= Phase::reaped) return;
  // The child and its group (every process it started), whatever SIGCHLD's
  // disposition: see kill_worker_and_group.
  kill_worker_and_group(pidfd_, pid);
}

// Reaper thread: the process has exited.
void IsolateRun::on_process_exit() noexcept {
  {
    std::lock_guard lock(mutex_);
    switch (reap_owner_) {
      case ReapOwner::none:
        reap_owner_ = ReapOwner::reaper;
        break;
      case ReapOwner::waiter_for_result:
        // That thread reaps whatever wakes it (see take_committed_outcome, wake).
        reap_owner_ = ReapOwner::result_waiter_must_reap;
        return;
      case ReapOwner::reaper:
      case ReapOwner::waiter:
      case ReapOwner::result_waiter_must_reap:
        return;
    }
  }
  reap_and_finish();
}

// The helping protocol, between a waiter (FutureStateBase::wait, then
// help_wait), a completer (FutureStateBase::complete, then wake) and the
// reaper (on_process_exit):
//   1. The waiter marks the future `helping_` under the future's lock, then
//      takes this run's lock and re-checks that the future is not ready.
//      Only then does it take the reap (ReapOwner none -> waiter or
//      waiter_for_result) and poll, outside every lock, the pidfd, wake_fd_
//      and the commit fd.
//   2. A completer marks the future ready, then (if `helping_`) calls
//      wake(), which takes this run's lock: if a waiter for the result owns
//      the reap, wake() hands it back (-> none) and writes wake_fd_. If not,
//      the waiter has not passed step 1's check yet and will see the future
//      ready there. Either way the waiter returns without waiting for the
//      worker's exit.
//   3. The reaper, seeing the exit while a waiter owns the reap, leaves the
//      reap to it (waiter_for_result -> result_waiter_must_reap): the waiter
//      then reaps, even if a cancellation woke it.
// A thread about to block in get() or exited().wait(): rather than wait to
// be woken by the reaper, wait for the process itself and reap it here, as a
// bare waitpid() would. Saves one thread wake-up between exit and waiter. A
// wait for the result also ends when the result's future completes otherwise
// (cancellation): the reap then goes back to the reaper. With
// deliver_at_commit it also ends when the worker commits its outcome: this
// thread then delivers it and hands the reap back.
void IsolateRun::help_wait(const FutureStateBase& state) noexcept {
  const bool for_result = &state != exited_.get();
  int fds_to_poll[3] = {-1, -1, -1};
  std::uint64_t watch;
  {
    std::lock_guard lock(mutex_);
    if (phase_ != Phase::running || reap_owner_ != ReapOwner::none) return;
    // Readiness is checked again under the lock. The future is marked ready
    // before wake() takes this lock: either wake() finds this thread
    // registered as the reap's owner below (and wakes it through wake_fd_),
    // or this check sees the future ready. A completion landing between the
    // waiter's announcement (FutureStateBase::wait) and this lock is never
    // missed.
    if (state.is_ready()) return;
    // The result comes without the exit (or has come): wait for it, not for the exit.
    if (for_result && (killed_ || delivery_ != Delivery::pending)) return;
    if (for_result) {
      // A cancellation hands the reap back (see wake()) while this thread
      // may not have reached poll() yet, and the reaper may then close
      // pidfd_ and wake_fd_: poll copies of them.
      if (wake_fd_ < 0) wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      if (wake_fd_ < 0) return;
      fds_to_poll[0] = ::fcntl(pidfd_, F_DUPFD_CLOEXEC, 0);
      fds_to_poll[1] = ::fcntl(wake_fd_, F_DUPFD_CLOEXEC, 0);
      // (If this copy fails, the reaper still delivers at commit.)
      if (commit_fd_ >= 0) fds_to_poll[2] = ::fcntl(commit_fd_, F_DUPFD_CLOEXEC, 0);
      if (fds_to_poll[0] < 0 || fds_to_poll[1] < 0) {
        for (const int fd : fds_to_poll) {
          if (fd >= 0) ::close(fd);
        }
        return;
      }
      reap_owner_ = ReapOwner::waiter_for_result;
    } else {
      fds_to_poll[0] = pidfd_;  // closed only by the reap, which is this thread's now
      reap_owner_ = ReapOwner::waiter;
    }
    watch = reaper_watch_;
  }
  if (!for_result) {
    // Nothing but the exit ends this wait: the reaper need not wake for it
    // (on two CPUs its wake-up and its lock would compete with this thread).
    stop_watching(watch);
  }
  pollfd fds[3] = {{fds_to_poll[0], POLLIN, 0}, {fds_to_poll[1], POLLIN, 0},
                   {fds_to_poll[2], POLLIN, 0}};  // -1 is skipped
  int ready;
  while ((ready = ::poll(fds, 3, -1)) < 0 && errno == EINTR) {
  }
  if (for_result) {
    for (const int fd : fds_to_poll) {
      if (fd >= 0) ::close(fd);
    }
    if (ready > 0 && fds[0].revents == 0 && fds[2].revents != 0) return take_committed_outcome(watch);
    if (ready > 0 && fds[0].revents == 0) {
      // Woken by a cancellation, which handed the reap back to the reaper
      // (still watching): return without touching the lock the cancelling
      // thread holds while it kills the worker.
      return;
    }
    {
      std::lock_guard lock(mutex_);
      if (reap_owner_ != ReapOwner::waiter_for_result && reap_owner_ != ReapOwner::result_waiter_must_reap) {
        return;  // handed back (and perhaps reaped by the reaper since)
      }
      if (ready < 0 && reap_owner_ == ReapOwner::waiter_for_result) {
        // poll failed: leave the reap to the reaper.
        reap_owner_ = ReapOwner::none;
        return;
      }
      reap_owner_ = ReapOwner::waiter;  // the exit is here: this thread reaps
    }
    stop_watching(watch);
  }
  reap_and_finish();
}

// A thread helping with the result saw the worker's commit before its exit:
// hands the reap back to the reaper and delivers the outcome here (unless
// the reaper's commit watch was first, or a cancellation).
void IsolateRun::take_committed_outcome(std::uint64_t watch) noexcept {
  bool claimed;
  bool reap_here = false;
  {
    std::lock_guard lock(mutex_);
    if (reap_owner_ == ReapOwner::waiter_for_result) {
      reap_owner_ = ReapOwner::none;  // the reaper still watches the worker
    } else if (reap_owner_ == ReapOwner::result_waiter_must_reap) {
      reap_owner_ = ReapOwner::waiter;  // the reaper saw the exit and left it here
      reap_here = true;
    }
    claimed = claim_committed_outcome_locked();
  }
  if (claimed) deliver_claimed_outcome();
  if (reap_here) {
    stop_watching(watch);
    reap_and_finish();
  }
}

// The future this thread may be helping with has completed (on the
// completing thread; for the result, by a cancellation: any other outcome is
// delivered after the reap or by the waiter itself).
void IsolateRun::wake(const FutureStateBase& state) noexcept {
  if (&state == exited_.get()) return;
  std::lock_guard lock(mutex_);
  if (reap_owner_ == ReapOwner::waiter_for_result) {
    // Hand the reap back to the reaper, which still watches the worker
    // (after the exit, result_waiter_must_reap: the waiter reaps it anyway).
    reap_owner_ = ReapOwner::none;
    ::eventfd_write(wake_fd_, 1);
  }
}

// The process has exited and this thread owns its reap (reaper or waiter).
void IsolateRun::reap_and_finish() noexcept {
  bool killed;
  bool delivered_at_commit;
  ProcessExit exit;
  {
    std::lock_guard lock(mutex_);
    killed = killed_;
    // (After a kill the group has its SIGKILL already, and no member can
    // fork once it is pending. A worker asked to stop may have left
    // children: the reap kills its group.)
    const bool group_killed = stop_ == Stop::killed || stop_ == Stop::killed_after_grace;
    const ReapedWorker reaped = reap_worker(pidfd_, pid_.load(), group_killed);
    exit = reaped.exit;
    cpu_seconds_ = reaped.cpu_seconds;
    phase_ = Phase::reaped;
    ::close(pidfd_);
    pidfd_ = -1;
    if (wake_fd_ >= 0) ::close(wake_fd_);  // no one polls it any more
    wake_fd_ = -1;
    // Delivery: at_commit stays the deliverer's; pending -> after_exit here
    // (on_commit() now claims nothing).
    delivered_at_commit = delivery_ != Delivery::pending;
    if (!delivered_at_commit && !killed) delivery_ = Delivery::after_exit;
  }
  close_commit_fd();
  release_worker_memory();
  if (delivered_at_commit) {
    {
      std::lock_guard lock(mutex_);
      if (delivery_ == Delivery::at_commit) {
        // deliver_committed() releases everything when it is done.
        exit_after_delivery_ = exit;
        return;
      }
    }
    release_and_signal_exit(exit);
    return;
  }
  if (killed) {
    // The future failed already: nothing to decode, so release everything
    // here, without a hop to the executor.
    remove_result_shm_if_claimed();
    release_and_signal_exit(exit);
    return;
  }
  if (spec_.deliver_is_trivial || !on_library_thread()) {
    // Decoding runs no user code, or this is the caller's own thread
    // waiting in exited(): finish here, without a hop.
    finish_process(exit);
    return;
  }
  try {
    default_executor().post([self = shared_from_this(), exit] { self->finish_process(exit); });
  } catch (...) {
    finish_process(exit);
  }
}

// Stops the reaper's commit watch, if any, and closes the commit descriptor.
void IsolateRun::close_commit_fd() noexcept {
  std::uint64_t watch;
  {
    std::lock_guard lock(mutex_);
    watch = std::exchange(commit_watch_, 0);
  }
  if (watch != 0) stop_watching(watch);  // (not under mutex_: on_commit() takes it)
  std::lock_guard lock(mutex_);
  if (commit_fd_ >= 0) ::close(commit_fd_);
  commit_fd_ = -1;
}

}  // namespace cancellable::detail
