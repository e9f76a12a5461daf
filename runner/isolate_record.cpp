// One isolate run: starting the worker (fork, or a thread), killing it,
// reaping it, delivering its outcome and releasing what it held.
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <linux/futex.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <boost/interprocess/anonymous_shared_memory.hpp>

#include "cancellable/detail/isolate_runtime.hpp"
#include "cancellable/detail/library_thread.hpp"
#include "cancellable/detail/timer.hpp"
#include "cancellable/executor.hpp"
#include "worker/protocol/control_block.hpp"
#include "runner/keeper.hpp"
#include "runner/reaper.hpp"
#include "worker/protocol/result_channel.hpp"
#include "worker/test_seams.hpp"
#include "worker/child_entry.hpp"

namespace bip = boost::interprocess;

namespace cancellable::detail {

namespace {

std::atomic<ForkFunction> fork_function{nullptr};

// Direct system calls: glibc 2.36's <sys/pidfd.h> lacks C linkage for C++.
int open_pidfd(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int send_signal_to_pidfd(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

pid_t do_fork() {
  if (auto f = fork_function.load(std::memory_order_acquire)) return f();
  return ::fork();
}

// Control blocks of finished runs, kept mapped for the next ones: mapping and
// unmapping 16 KiB of shared memory per run costs system calls and, for the
// unmap, a TLB shoot-down across CPUs. A block goes back only after its
// worker was reaped, so no process of that run writes to it any more (except
// one that left the worker's process group, which the library cannot reach).
class ControlBlockPool {
 public:
  using Region = std::unique_ptr<bip::mapped_region>;

  Region acquire() {
    {
      std::lock_guard lock(mutex_);
      if (!idle_.empty()) {
        Region region = std::move(idle_.back());
        idle_.pop_back();
        return region;
      }
    }
    return std::make_unique<bip::mapped_region>(bip::anonymous_shared_memory(ControlBlock::kSize));
  }

  void give_back(Region region) noexcept {
    if (!region) return;
    try {
      std::lock_guard lock(mutex_);
      if (idle_.size() < kMaxIdle) {
        idle_.push_back(std::move(region));
        return;
      }
    } catch (...) {
    }
    // Unmapped here, outside the lock.
  }

 private:
  static constexpr std::size_t kMaxIdle = 8;
  std::mutex mutex_;
  std::vector<Region> idle_;
};

ControlBlockPool& control_block_pool() {
  static auto* pool = new ControlBlockPool();  // never destroyed: used until exit
  return *pool;
}

// PIDFD_GET_INFO (Linux 6.15): the exit status of a process that was reaped
// by someone else (the kernel itself, when the host ignores SIGCHLD), as
// long as a pidfd for it is held. glibc 2.36 does not declare it.
struct PidfdInfo {
  std::uint64_t mask;
  std::uint64_t cgroupid;
  std::uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
  std::int32_t exit_code;
};
static_assert(sizeof(PidfdInfo) == 64);
constexpr unsigned long kPidfdGetInfo = _IOWR(0xFF, 11, PidfdInfo);
constexpr std::uint64_t kPidfdInfoExit = 1ULL << 3;

// How the process of pidfd ended, from the kernel, once it was reaped by
// someone else; nothing if the kernel cannot tell (before 6.15).
std::optional<ProcessExit> exit_from_pidfd(int pidfd) noexcept {
  // The status is recorded when the process is released, just after its
  // pidfd became readable: a few tries.
  for (int attempt = 0; attempt < 1000; ++attempt) {
    PidfdInfo info{};
    info.mask = kPidfdInfoExit;
    if (::ioctl(pidfd, kPidfdGetInfo, &info) != 0) {
      if (errno == ESRCH) {
        ::sched_yield();
        continue;
      }
      return std::nullopt;  // ENOTTY, EINVAL: not supported here
    }
    if (info.mask & kPidfdInfoExit) {
      ProcessExit exit;
      if (WIFEXITED(info.exit_code)) {
        exit.kind = ProcessExit::Kind::exited;
        exit.code = WEXITSTATUS(info.exit_code);
      } else {
        exit.kind = ProcessExit::Kind::killed;
        exit.signal = WTERMSIG(info.exit_code);
      }
      return exit;
    }
    ::sched_yield();
  }
  return std::nullopt;
}

// Is the process of pidfd still this process's child, not reaped yet? A
// waitid on a pidfd answers only for this process's own children (ECHILD
// otherwise): true means its pid, and its process group id, cannot have
// been reused, so they may be signalled.
bool still_our_unreaped_child(int pidfd) noexcept {
  siginfo_t peek{};
  return ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &peek,
                  WEXITED | WNOHANG | WNOWAIT) == 0;
}

ProcessExit exit_of(const siginfo_t& info) {
  ProcessExit exit;
  if (info.si_code == CLD_EXITED) {
    exit.kind = ProcessExit::Kind::exited;
    exit.code = info.si_status;
  } else {
    exit.kind = ProcessExit::Kind::killed;
    exit.signal = info.si_status;
  }
  return exit;
}

class Record final : public IsolateRecord,
                     public Reapable,
                     public std::enable_shared_from_this<Record> {
 public:
  Record() : exited_(std::make_shared<FutureState<ProcessExit>>()) {}

  ~Record() override {
    if (pidfd_ >= 0) ::close(pidfd_);
    if (wake_fd_ >= 0) ::close(wake_fd_);
    if (commit_fd_ >= 0) ::close(commit_fd_);
  }

  Backend backend() const noexcept override { return backend_.load(std::memory_order_acquire); }
  pid_t pid() const noexcept override { return pid_.load(std::memory_order_acquire); }

  std::optional<Progress> progress() const override {
    std::lock_guard lock(mutex_);
    if (block_) return block_->read_progress();
    return last_progress_;
  }

  void kill() noexcept override {
    std::lock_guard lock(mutex_);
    kill_requested_ = true;
    kill_locked();
  }

  Future<ProcessExit> exited() const override { return Future<ProcessExit>(exited_); }

  int pidfd() const noexcept override { return pidfd_; }

  void start(LaunchSpec spec) {
    Backend backend = spec.options.backend;
    std::exception_ptr bad_environment;
    try {
      if (backend == Backend::automatic) {
        if (auto forced = backend_from_environment()) backend = *forced;
      }
    } catch (...) {
      bad_environment = std::current_exception();
    }
    bool cancelled_before_start;
    {
      std::lock_guard lock(mutex_);
      spec_ = std::move(spec);
      has_progress_callback_ = static_cast<bool>(spec_.options.on_progress);
      progress_interval_ = spec_.options.progress_interval;
      cancelled_before_start = kill_requested_;
    }
    if (cancelled_before_start) {
      // The future has already failed; nothing was started.
      release_and_signal_exit(ProcessExit{});
      return;
    }
    if (bad_environment) {
      spec_.fail(bad_environment);
      release_and_signal_exit(ProcessExit{});
      return;
    }
    if (backend == Backend::thread) {
      start_thread();
    } else {
      start_process(backend == Backend::process);
    }
  }

  // Reaper thread: the process has exited.
  void on_process_exit() noexcept override {
    {
      std::lock_guard lock(mutex_);
      if (reap_owner_ == ReapOwner::waiter) {
        // A waiting thread took the reap over; if it gives it back, it sees this.
        reaper_deferred_ = true;
        return;
      }
      if (reap_owner_ != ReapOwner::none) return;
      reap_owner_ = ReapOwner::reaper;
    }
    reap_and_finish();
  }

  // Reaper thread: the worker process signalled that its outcome is
  // committed (deliver_at_commit). Delivers it now, before the exit.
  void on_commit() noexcept {
    bool claimed;
    {
      std::lock_guard lock(mutex_);
      claimed = claim_committed_outcome_locked();
    }
    if (claimed) deliver_claimed_outcome();
  }

  // The helping protocol, between a waiter (FutureStateBase::wait, then
  // help_wait), a completer (FutureStateBase::complete, then wake) and the
  // reaper (on_process_exit):
  //   1. The waiter marks the future `helping_` under the future's lock, then
  //      takes this record's lock and re-checks that the future is not ready.
  //      Only then does it become the reap's owner (ReapOwner::waiter) and
  //      poll, outside every lock, the pidfd, wake_fd_ and the commit fd.
  //   2. A completer marks the future ready, then (if `helping_`) calls
  //      wake(), which takes this record's lock: if a waiter owns the reap,
  //      wake() hands it back to the reaper and writes wake_fd_. If not, the
  //      waiter has not passed step 1's check yet and will see the future
  //      ready there. Either way the waiter returns without waiting for the
  //      worker's exit.
  //   3. The reaper, seeing the exit while a waiter owns the reap, only marks
  //      `reaper_deferred_`; the waiter then reaps, even if it was handed
  //      back meanwhile.
  // A thread about to block in get() or exited().wait(): rather than wait to
  // be woken by the reaper, wait for the process itself and reap it here, as
  // a bare waitpid() would. Saves one thread wake-up between exit and waiter.
  // A wait for the result also ends when the result's future completes
  // otherwise (cancellation): the reap then goes back to the reaper. With
  // deliver_at_commit it also ends when the worker commits its outcome: this
  // thread then delivers it and hands the reap back.
  void help_wait(const FutureStateBase& state) noexcept override {
    const bool for_result = &state != exited_.get();
    int fds_to_poll[3] = {-1, -1, -1};
    std::uint64_t watch;
    {
      std::lock_guard lock(mutex_);
      if (reap_owner_ != ReapOwner::none || pidfd_ < 0 || launching_) return;
      // Readiness is checked again under the lock. The future is marked
      // ready before wake() takes this lock: either wake() finds this thread
      // registered as the reap's owner below (and wakes it through wake_fd_),
      // or this check sees the future ready. A completion landing between the
      // waiter's announcement (FutureStateBase::wait) and this lock is never
      // missed.
      if (state.is_ready()) return;
      // The result comes without the exit (or has come): wait for it, not for the exit.
      if (for_result && (kill_requested_ || early_ != EarlyDelivery::none)) return;
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
      } else {
        fds_to_poll[0] = pidfd_;  // closed only by the reap, which is this thread's now
      }
      reap_owner_ = ReapOwner::waiter;
      waiting_for_result_ = for_result;
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
        // (still watching): return without touching the lock the
        // cancelling thread holds while it kills the worker.
        return;
      }
      {
        std::lock_guard lock(mutex_);
        waiting_for_result_ = false;
        if (reap_owner_ != ReapOwner::waiter) return;  // handed back
        if (ready < 0 && !reaper_deferred_) {
          // poll failed: leave the reap to the reaper.
          reap_owner_ = ReapOwner::none;
          return;
        }
      }
      stop_watching(watch);
    }
    reap_and_finish();
  }

  // A thread helping with the result saw the worker's commit before its
  // exit: hands the reap back to the reaper and delivers the outcome here
  // (unless the reaper's commit watch was first, or a cancellation).
  void take_committed_outcome(std::uint64_t watch) noexcept {
    bool claimed;
    bool reap_here = false;
    {
      std::lock_guard lock(mutex_);
      waiting_for_result_ = false;
      if (reap_owner_ == ReapOwner::waiter) {
        // The reaper still watches the worker, unless it saw the exit
        // already and left the reap to this thread.
        if (reaper_deferred_) {
          reap_here = true;
        } else {
          reap_owner_ = ReapOwner::none;
        }
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
  // completing thread; for the result, by a cancellation: any other outcome
  // is delivered after the reap).
  void wake(const FutureStateBase& state) noexcept override {
    if (&state == exited_.get()) return;
    std::lock_guard lock(mutex_);
    if (reap_owner_ == ReapOwner::waiter && waiting_for_result_ && !reaper_deferred_) {
      // Hand the reap back to the reaper, which still watches the worker
      // (unless it already saw the exit: then the waiter reaps it anyway).
      reap_owner_ = ReapOwner::none;
      waiting_for_result_ = false;
      ::eventfd_write(wake_fd_, 1);
    }
  }

 private:
  enum class ReapOwner { none, reaper, waiter };
  // An outcome delivered before the worker's exit (deliver_at_commit).
  enum class EarlyDelivery { none, running, done };

  // What the reaper watches to learn of a committed outcome.
  class CommitWatch final : public Reapable {
   public:
    CommitWatch(std::shared_ptr<Record> record, int fd) : record_(std::move(record)), fd_(fd) {}
    int pidfd() const noexcept override { return fd_; }
    void on_process_exit() noexcept override { record_->on_commit(); }

   private:
    std::shared_ptr<Record> record_;
    int fd_;
  };

  // The process has exited and this thread owns its reap.
  void reap_and_finish() noexcept {
    siginfo_t info{};
    bool killed;
    bool delivered_early;
    std::optional<ProcessExit> reaped_elsewhere;
    {
      std::lock_guard lock(mutex_);
      killed = kill_requested_;
      if (!killed && pid_.load() > 0 && still_our_unreaped_child(pidfd_)) {
        // Whatever the child started in its group dies with it. The unreaped
        // child keeps the group id reserved, so this cannot hit a stranger.
        // (After a kill the group has its SIGKILL already, and no member can
        // fork once it is pending.) A child the kernel reaped already (the
        // host ignores SIGCHLD) no longer reserves it: no group kill then.
        ::kill(-pid_.load(), SIGKILL);
      }
      int reaped;
      rusage usage{};
      // The system call itself, for its fifth argument: the child's resource
      // usage (glibc's waitid() passes none; siginfo's si_utime stays 0).
      while ((reaped = static_cast<int>(::syscall(SYS_waitid, P_PIDFD, pidfd_, &info, WEXITED, &usage))) != 0 &&
             errno == EINTR) {
      }
      if (reaped != 0) {
        // ECHILD: reaped by the kernel (SIGCHLD ignored) or by the host's
        // waitpid(-1). Ask the pidfd how it ended.
        reaped_elsewhere = exit_from_pidfd(pidfd_).value_or(ProcessExit{ProcessExit::Kind::unknown});
      } else {
        cpu_seconds_ = usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
                       (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1000000;
      }
      reaped_ = true;
      keeper_forget(pid_.load());  // its group was killed above (or by the kill)
      ::close(pidfd_);
      pidfd_ = -1;
      if (wake_fd_ >= 0) ::close(wake_fd_);  // no one polls it any more
      wake_fd_ = -1;
      delivered_early = early_ != EarlyDelivery::none;  // if not, on_commit() now does nothing
    }
    close_commit_fd();
    const ProcessExit exit = reaped_elsewhere ? *reaped_elsewhere : exit_of(info);
    release_worker_memory();
    if (delivered_early) {
      {
        std::lock_guard lock(mutex_);
        if (early_ == EarlyDelivery::running) {
          // deliver_committed() releases everything when it is done.
          exit_after_delivery_ = exit;
          return;
        }
      }
      release_and_signal_exit(exit);
      return;
    }
    if (!killed && (spec_.deliver_is_trivial || !on_library_thread())) {
      // Decoding runs no user code, or this is the caller's own thread
      // waiting in exited(): finish here, without a hop.
      finish_process(exit);
      return;
    }
    if (killed) {
      // The future failed already: nothing to decode, so release everything
      // here, without a hop to the executor.
      remove_result_shm_if_claimed();
      release_and_signal_exit(exit);
      return;
    }
    try {
      default_executor().post([self = shared_from_this(), exit] { self->finish_process(exit); });
    } catch (...) {
      finish_process(exit);
    }
  }

  // Under mutex_, once the worker signalled its commit: claims the early
  // delivery of its outcome, unless it was claimed already, the run was
  // killed or reaped, or nothing is committed (a thread the work left behind
  // wrote the descriptor?): the exit then decides.
  bool claim_committed_outcome_locked() noexcept {
    if (early_ != EarlyDelivery::none || kill_requested_ || reaped_ || !block_) return false;
    if (static_cast<Outcome>(block_->outcome.load(std::memory_order_acquire)) == Outcome::none) return false;
    early_ = EarlyDelivery::running;
    return true;
  }

  // After a claim: the worker writes nothing any more, so its memory is free
  // for the next run; the outcome is delivered on this thread, or on the
  // default executor if decoding runs user code and this is a library thread.
  // (spec_ stays: the run is released only after deliver_committed.)
  void deliver_claimed_outcome() noexcept {
    release_worker_memory();
    if (spec_.deliver_is_trivial || !on_library_thread()) return deliver_committed();
    try {
      default_executor().post([self = shared_from_this()] { self->deliver_committed(); });
    } catch (...) {
      deliver_committed();
    }
  }

  // Delivers a claimed early outcome; releases the run if the reap came first.
  void deliver_committed() noexcept {
    deliver_outcome(ProcessExit{});  // (an outcome is committed: the exit is not needed)
    remove_result_shm_if_claimed();
    std::optional<ProcessExit> exit;
    {
      std::lock_guard lock(mutex_);
      early_ = EarlyDelivery::done;
      exit = exit_after_delivery_;
    }
    // The reap came first and left the release to this thread.
    if (exit) release_and_signal_exit(*exit);
  }

  // Stops the reaper's commit watch, if any, and closes the commit descriptor.
  void close_commit_fd() noexcept {
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

  // The worker is gone (or has committed its outcome and writes no more):
  // what it wrote into is free for the next run.
  void release_worker_memory() noexcept {
    std::shared_ptr<void> memory;
    {
      std::lock_guard lock(mutex_);
      memory = std::move(spec_.worker_memory);
    }
  }

  void kill_locked() noexcept {
    const pid_t pid = pid_.load(std::memory_order_relaxed);
    if (pid <= 0 || reaped_) return;
    send_signal_to_pidfd(pidfd_, SIGKILL);  // the pidfd: never a stranger
    // The child's group: every process it started. Only while the child is
    // unreaped, which keeps the group id from being reused.
    if (still_our_unreaped_child(pidfd_)) ::kill(-pid, SIGKILL);
  }

  void start_process(bool forced) {
    if (refused_inside_worker()) return;
    std::unique_ptr<ChildChannelImpl> channel;
    int keeper_fd = -1;
    try {
      // Everything that can fail for want of descriptors or memory happens
      // before the fork: the reaper's epoll descriptor and thread, the
      // control block, the channel's stream.
      ensure_reaper_started();
      keeper_fd = ensure_keeper_started();
      control_region_ = control_block_pool().acquire();
      block_ = new (control_region_->get_address()) ControlBlock();
      shm_name_ = make_result_shm_name();
      std::strncpy(block_->shm_name, shm_name_.c_str(), sizeof block_->shm_name - 1);
      ChildLimits limits;
      limits.max_result_bytes = spec_.options.max_result_bytes;
      limits.memory_limit_bytes = spec_.options.memory_limit_bytes;
      channel = std::make_unique<ChildChannelImpl>(block_, limits);
    } catch (const std::exception& e) {
      give_back_control_block();
      // Out of memory for the control block: processes are unavailable, as
      // when fork fails with ENOMEM. Out of descriptors or threads (a
      // std::system_error naming the step): the run fails with it.
      const bool no_process_memory = dynamic_cast<const std::system_error*>(&e) == nullptr;
      if (!forced && no_process_memory) return start_thread();
      fail(std::current_exception());
      return release_and_signal_exit(ProcessExit{});
    }

    ChildSetup setup;
    setup.parent_pid = ::getpid();
    setup.block = block_;
    setup.channel = channel.get();
    setup.keeper_fd = keeper_fd;
    setup.memory_limit_bytes = spec_.options.memory_limit_bytes;
    setup.cpu_time_limit = spec_.options.cpu_time_limit;
    setup.body = &spec_.child_body;
    if (spec_.deliver_at_commit) {
      // Without it the outcome is delivered after the exit, as usual.
      commit_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      setup.commit_fd = commit_fd_;
    }

    // Signals stay blocked across fork so that no handler of the parent runs
    // in the child before it resets them.
    sigset_t all;
    sigset_t previous;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &previous);
    forking_thread_ = static_cast<pid_t>(::syscall(SYS_gettid));
    const pid_t pid = do_fork();
    if (pid == 0) run_child(setup);
    const int fork_error = errno;
    ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);

    if (pid < 0) {
      close_commit_fd();
      give_back_control_block();
      if (!forced && (fork_error == EAGAIN || fork_error == ENOMEM || fork_error == ENOSYS)) {
        return start_thread();
      }
      fail(std::make_exception_ptr(
          std::system_error(fork_error, std::generic_category(), "CancellableIsolate: fork")));
      return release_and_signal_exit(ProcessExit{});
    }

    // ---- The child exists. From here on, every failure kills and reaps it
    // and fails the future (abandon_child); nothing escapes. ----
    // The child waits at the start gate, so it cannot have exited on its own
    // yet: its pid is still its own, and the pidfd opened now is race-free
    // (checked below: waitid on a pidfd answers only for our own children).
    const int pidfd = open_pidfd(pid);
    if (pidfd < 0) return abandon_child(pid, -1, errno, "pidfd_open");
    if (!still_our_unreaped_child(pidfd)) {
      // Killed from outside before it started, and reaped by the kernel (the
      // host ignores SIGCHLD): nothing of ours is left to signal or reap.
      ::close(pidfd);
      close_commit_fd();
      fail(std::make_exception_ptr(IsolateCrashed(
          exit_from_pidfd_or_unknown(pidfd), "ended before it started")));
      return release_and_signal_exit(ProcessExit{ProcessExit::Kind::unknown});
    }
    ::setpgid(pid, pid);  // also done by the child; whichever runs first wins
    open_start_gate();
    try {
      if (commit_fd_ >= 0) {
        // Before the pidfd is published: the reap (which may then start at
        // once, on a waiting thread) stops this watch.
        const std::uint64_t watch =
            reap_when_exited(std::make_shared<CommitWatch>(shared_from_this(), commit_fd_));
        std::lock_guard lock(mutex_);
        commit_watch_ = watch;
      }
      {
        // Published before the reaper watches: it reads them on the exit.
        std::lock_guard lock(mutex_);
        pidfd_ = pidfd;
        backend_.store(Backend::process, std::memory_order_release);
        pid_.store(pid, std::memory_order_release);
      }
      reaper_watch_ = reap_when_exited(shared_from_this());
    } catch (const std::exception& e) {
      {
        // Nothing watches the worker and no waiter helps while launching_:
        // the reap is abandon_child's alone.
        std::lock_guard lock(mutex_);
        pidfd_ = -1;
        reaped_ = true;
      }
      return abandon_child(pid, pidfd, 0, std::string("watching the worker: ") + e.what());
    }
    {
      std::lock_guard lock(mutex_);
      launching_ = false;  // waiters may help from now on
      if (kill_requested_) kill_locked();
    }
    exited_->set_wait_helper(weak_from_this());
    try {
      start_progress_watch();
    } catch (...) {
      // Progress callbacks are lost; the run itself goes on.
    }
  }

  // Inside an isolate's worker no isolate may start: fork copied none of
  // the library's threads (reaper, timers, executor) into it, and some of
  // their locks may be held. Fails the run and returns true there.
  bool refused_inside_worker() noexcept {
    if (!in_isolate_worker()) return false;
    fail(std::make_exception_ptr(std::logic_error(
        "CancellableIsolate: an isolate cannot start inside an isolate's worker process (the "
        "library's threads do not exist there); run the inner work directly")));
    release_and_signal_exit(ProcessExit{});
    return true;
  }

  // No worker was started: the control block goes back to the pool unused.
  void give_back_control_block() noexcept {
    ControlBlockPool::Region unused;
    {
      std::lock_guard lock(mutex_);
      block_ = nullptr;
      unused = std::move(control_region_);
    }
    control_block_pool().give_back(std::move(unused));
  }

  // Opens the start gate (see ControlBlock): the worker may run its work.
  void open_start_gate() noexcept {
    auto& gate = block_->start_gate;
    if (gate.exchange(ControlBlock::kGateOpen, std::memory_order_acq_rel) == ControlBlock::kGateWaiting) {
      ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&gate), FUTEX_WAKE, 1, nullptr, nullptr, 0);
    }
  }

  static ProcessExit exit_from_pidfd_or_unknown(int pidfd) noexcept {
    return exit_from_pidfd(pidfd).value_or(ProcessExit{ProcessExit::Kind::unknown});
  }

  // A step after the fork failed: kills the child (and its group), reaps it,
  // and fails the future with what failed. The child was held at the start
  // gate or is known by its pidfd, so neither its pid nor its group id can
  // be a stranger's.
  void abandon_child(pid_t pid, int pidfd, int error, const std::string& what) noexcept {
    if (pidfd >= 0) send_signal_to_pidfd(pidfd, SIGKILL);
    if (pid > 0) {  // (never kill(0) or kill(-0): this process's own group)
      ::kill(pid, SIGKILL);
      ::kill(-pid, SIGKILL);
    }
    siginfo_t info{};
    if (pidfd >= 0) {
      while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED) != 0 &&
             errno == EINTR) {
      }
      ::close(pidfd);
    } else {
      while (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED) != 0 && errno == EINTR) {
      }
    }
    keeper_forget(pid);
    close_commit_fd();
    remove_result_shm(shm_name_.c_str());
    const std::string message = "CancellableIsolate: the worker was started, then killed: " + what;
    fail(error != 0 ? std::make_exception_ptr(std::system_error(error, std::generic_category(), message))
                    : std::make_exception_ptr(std::runtime_error(message)));
    release_and_signal_exit(exit_of(info));
  }

  void start_thread() {
    {
      std::lock_guard lock(mutex_);
      heap_block_ = std::make_unique<ControlBlock>();
      block_ = heap_block_.get();
      backend_.store(Backend::thread, std::memory_order_release);
    }
    if (refused_inside_worker()) return;
    try {
      start_progress_watch();
      start_worker_thread();
    } catch (const std::exception&) {
      // No thread (EAGAIN): nothing runs; the future fails with why.
      fail(std::current_exception());
      release_and_signal_exit(ProcessExit{});
    }
  }

  void start_worker_thread() {
    std::thread([self = shared_from_this()] {
      bool skip;
      {
        std::lock_guard lock(self->mutex_);
        skip = self->kill_requested_;
      }
      if (!skip) {
        progress_block_of_this_thread() = self->block_;
        self->spec_.thread_body(self->spec_.token.stop_token());
        progress_block_of_this_thread() = nullptr;
      }
      self->release_and_signal_exit(ProcessExit{});
    }).detach();
  }

  // Default executor, after the reaper reaped the process.
  void finish_process(const ProcessExit& exit) noexcept {
    deliver_outcome(exit);
    remove_result_shm_if_claimed();
    release_and_signal_exit(exit);
  }

  // Completes the future with the worker's outcome (exit: how the process
  // ended, for a worker that committed none), unless it was killed.
  void deliver_outcome(const ProcessExit& exit) noexcept {
    bool killed;
    {
      std::lock_guard lock(mutex_);
      killed = kill_requested_;
    }
    if (!killed) {
      try {
        if (auto setup_error = worker_setup_error()) {
          fail(setup_error);
          return;
        }
        ResultReader reader(block_, shm_name_, spec_.options.max_result_bytes);
        switch (reader.outcome()) {
          case Outcome::value:
            try {
              spec_.deliver(reader.view());
            } catch (...) {
              fail(std::current_exception());
            }
            break;
          case Outcome::exception:
            fail(decode_exception(reader.view()));
            break;
          case Outcome::none:
            fail(crash_error(exit));
            break;
        }
      } catch (...) {
        fail(std::current_exception());
      }
    }
  }

  // Removes the result object by the parent's own copy of its name (the
  // worker can write the copy in the control block). The claimed flag only
  // saves a system call when no object was made; a worker lying about it
  // could only leave its own object behind.
  void remove_result_shm_if_claimed() noexcept {
    if (block_ && block_->shm_claimed.load(std::memory_order_acquire)) {
      remove_result_shm(shm_name_.c_str());
    }
  }

  // A setup step the worker reported as failed, as the error to fail with.
  std::exception_ptr worker_setup_error() const {
    const auto step = block_->setup_failed_step.load(std::memory_order_acquire);
    if (step == 0 || step > static_cast<std::uint32_t>(SetupStep::descriptors)) return nullptr;
    const int error = block_->setup_errno.load(std::memory_order_relaxed);
    return std::make_exception_ptr(std::system_error(
        error, std::generic_category(),
        std::string("CancellableIsolate: the worker could not ") + describe(static_cast<SetupStep>(step))));
  }

  std::exception_ptr crash_error(const ProcessExit& exit) const {
    if (exit.kind == ProcessExit::Kind::killed && spec_.options.cpu_time_limit) {
      // SIGXCPU at the limit, or SIGKILL at the hard limit one second later
      // when the work ignores SIGXCPU (the kernel's, not ours: the run was
      // not killed, and the CPU time the reap reported reaches the limit).
      if (exit.signal == SIGXCPU ||
          (exit.signal == SIGKILL && cpu_seconds_ >= spec_.options.cpu_time_limit->count())) {
        return std::make_exception_ptr(CpuTimeLimitExceeded(*spec_.options.cpu_time_limit));
      }
    }
    if (exit.kind == ProcessExit::Kind::unknown) {
      return std::make_exception_ptr(IsolateCrashed(
          exit, "ended without a result; the kernel reaped it before its status could be read "
                "(SIGCHLD is ignored in this process)"));
    }
    if (exit.kind == ProcessExit::Kind::exited) {
      return std::make_exception_ptr(IsolateCrashed(exit, "ended without a result"));
    }
    if (exit.signal == SIGKILL && forking_thread_ > 0 && !thread_exists(forking_thread_)) {
      // PR_SET_PDEATHSIG fires when the thread that forked exits, not the
      // process: the likeliest killer (see isolate.hpp).
      return std::make_exception_ptr(IsolateCrashed(
          exit, "was killed when the thread that started it (thread " + std::to_string(forking_thread_) +
                    ") exited: PR_SET_PDEATHSIG follows that thread; start isolates from threads "
                    "that outlive them"));
    }
    return std::make_exception_ptr(IsolateCrashed(exit));
  }

  static bool thread_exists(pid_t tid) {
    return ::access(("/proc/self/task/" + std::to_string(tid)).c_str(), F_OK) == 0;
  }

  void fail(std::exception_ptr error) noexcept {
    try {
      if (spec_.fail) spec_.fail(std::move(error));
    } catch (...) {
    }
  }

  // Releases everything the run held, then completes exited().
  void release_and_signal_exit(const ProcessExit& exit) noexcept {
    std::shared_ptr<Timer> timer;
    std::function<void(const Progress&)> on_progress;
    std::optional<Progress> final_progress;
    LaunchSpec spec;
    ControlBlockPool::Region region;
    {
      std::lock_guard lock(mutex_);
      if (block_) final_progress = block_->read_progress();
      last_progress_ = final_progress;
      block_ = nullptr;
      region = std::move(control_region_);
      heap_block_.reset();
      timer = std::move(progress_timer_);
      finished_ = true;
      if (final_progress && final_progress != reported_progress_) on_progress = spec_.options.on_progress;
      // Drop the work, its captures and the future's core (outside the lock):
      // this breaks the cycle core -> record -> spec -> core.
      spec = std::move(spec_);
      spec_ = LaunchSpec{};
    }
    control_block_pool().give_back(std::move(region));
    if (timer) timer->cancel();
    if (on_progress) {
      try {
        default_executor().post([on_progress, p = *final_progress] { on_progress(p); });
      } catch (...) {
      }
    }
    exited_->set_value(exit);
    if (on_library_thread()) {
      // The work's captures are user objects: destroy them on the executor,
      // after the waiters of exited() have been woken.
      try {
        default_executor().post([spec = std::make_shared<LaunchSpec>(std::move(spec))] {});
      } catch (...) {
      }
    }
  }

  void start_progress_watch() {
    if (!has_progress_callback_) return;
    std::weak_ptr<Record> weak = weak_from_this();
    auto timer = start_timer(progress_interval_, [weak] {
      if (auto self = weak.lock()) self->progress_tick();
    });
    std::lock_guard lock(mutex_);
    if (!finished_) progress_timer_ = std::move(timer);
  }

  // Timer thread: hands changed progress to the default executor.
  void progress_tick() {
    std::function<void(const Progress&)> on_progress;
    std::optional<Progress> p;
    {
      std::lock_guard lock(mutex_);
      if (finished_ || !block_) return;
      p = block_->read_progress();
      if (p && p != reported_progress_) {
        reported_progress_ = p;
        on_progress = spec_.options.on_progress;
      }
    }
    if (on_progress) default_executor().post([on_progress, p = *p] { on_progress(p); });
    start_progress_watch();
  }

  mutable std::mutex mutex_;
  bool kill_requested_ = false;
  bool reaped_ = false;
  ReapOwner reap_owner_ = ReapOwner::none;
  bool reaper_deferred_ = false;
  bool waiting_for_result_ = false;
  int wake_fd_ = -1;  // eventfd that ends a waiter's wait for the result
  int commit_fd_ = -1;  // eventfd the worker writes once its outcome is committed
  std::uint64_t commit_watch_ = 0;
  EarlyDelivery early_ = EarlyDelivery::none;
  std::optional<ProcessExit> exit_after_delivery_;
  std::uint64_t reaper_watch_ = 0;
  bool finished_ = false;
  std::atomic<Backend> backend_{Backend::automatic};
  std::atomic<pid_t> pid_{0};
  bool launching_ = true;  // until the worker is watched: no waiter may help yet
  long long cpu_seconds_ = 0;  // CPU time of the reaped worker, whole seconds
  std::string shm_name_;  // the result object's name: the parent's own copy
  pid_t forking_thread_ = 0;  // the thread that forked the worker (its PR_SET_PDEATHSIG parent)
  int pidfd_ = -1;
  std::unique_ptr<bip::mapped_region> control_region_;
  std::unique_ptr<ControlBlock> heap_block_;
  ControlBlock* block_ = nullptr;
  std::optional<Progress> last_progress_;
  std::optional<Progress> reported_progress_;
  bool has_progress_callback_ = false;
  std::chrono::nanoseconds progress_interval_{0};
  std::shared_ptr<Timer> progress_timer_;
  LaunchSpec spec_;
  std::shared_ptr<FutureState<ProcessExit>> exited_;
};

}  // namespace

void validate_isolate_options(const IsolateOptions& options) {
  if (options.timeout && options.timeout->count() < 0) {
    throw std::invalid_argument("IsolateOptions::timeout must not be negative");
  }
  if (options.cpu_time_limit && options.cpu_time_limit->count() <= 0) {
    throw std::invalid_argument("IsolateOptions::cpu_time_limit must be at least one second");
  }
  if (options.on_progress && options.progress_interval.count() <= 0) {
    throw std::invalid_argument("IsolateOptions::progress_interval must be positive");
  }
}

std::shared_ptr<IsolateRecord> make_isolate_record() { return std::make_shared<Record>(); }

void start_isolate(const std::shared_ptr<IsolateRecord>& record, LaunchSpec spec) {
  static_cast<Record&>(*record).start(std::move(spec));
}

std::optional<Backend> backend_from_environment() {
  const char* value = std::getenv("CANCELLABLE_BACKEND");
  if (value == nullptr || value[0] == '\0') return std::nullopt;
  const std::string v = value;
  if (v == "thread") return Backend::thread;
  if (v == "process" || v == "fork") return Backend::process;
  if (v == "automatic") return std::nullopt;
  throw std::invalid_argument("CANCELLABLE_BACKEND must be thread, process or automatic, not '" + v +
                              "'");
}

void set_fork_function(ForkFunction f) noexcept { fork_function.store(f, std::memory_order_release); }

}  // namespace cancellable::detail
