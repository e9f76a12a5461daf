// Starting an isolate run: the backend, the fork and what must exist before
// it, the start gate, and the thread backend. See isolate_run.hpp for the
// lifecycle.
#include <linux/futex.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

#include "runner/isolate/isolate_run.hpp"
#include "runner/process/keeper.hpp"
#include "runner/process/worker_process.hpp"
#include "worker/child_entry.hpp"
#include "worker/protocol/result_channel.hpp"
#include "worker/test_seams.hpp"
#include "worker/work_stop.hpp"

namespace cancellable::detail {

namespace {

std::atomic<ForkFunction> fork_function{nullptr};

pid_t do_fork() {
  if (auto f = fork_function.load(std::memory_order_acquire)) return f();
  return ::fork();
}

}  // namespace

// What the reaper watches to learn of a committed outcome.
class IsolateRun::CommitWatch final : public Reapable {
 public:
  CommitWatch(std::shared_ptr<IsolateRun> run, int fd) : run_(std::move(run)), fd_(fd) {}
  int pidfd() const noexcept override { return fd_; }
  void on_process_exit() noexcept override { run_->on_commit(); }

 private:
  std::shared_ptr<IsolateRun> run_;
  int fd_;
};

void IsolateRun::start(LaunchSpec spec) {
  Backend backend = spec.options.backend;
  std::exception_ptr bad_environment;
  try {
    if (backend == Backend::automatic) {
      if (auto forced = backend_from_environment()) backend = *forced;
    }
  } catch (...) {
    bad_environment = std::current_exception();
  }
  bool killed_before_start;
  {
    std::lock_guard lock(mutex_);
    spec_ = std::move(spec);
    has_progress_callback_ = static_cast<bool>(spec_.options.on_progress);
    progress_interval_ = spec_.options.progress_interval;
    killed_before_start = killed_;
  }
  if (killed_before_start) {
    // The future has already failed; nothing was started.
    release_and_signal_exit(ProcessExit{});
    return;
  }
  if (bad_environment) {
    fail(bad_environment);
    release_and_signal_exit(ProcessExit{});
    return;
  }
  if (backend == Backend::thread) {
    start_thread();
  } else {
    start_process(backend == Backend::process);
  }
}

void IsolateRun::start_process(bool forced) {
  if (refused_inside_worker()) return;
  std::unique_ptr<ChildChannelImpl> channel;
  int keeper_fd = -1;
  try {
    // Everything that can fail for want of descriptors or memory happens
    // before the fork: the reaper's epoll descriptor and thread, the
    // control block, the channel's stream.
    ensure_reaper_started();
    keeper_fd = ensure_keeper_started();
    control_region_ = acquire_control_region();
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
    const ProcessExit exit = exit_from_pidfd_or_unknown(pidfd);
    ::close(pidfd);
    close_commit_fd();
    fail(std::make_exception_ptr(WorkerCrashed(exit, "ended before it started")));
    return release_and_signal_exit(ProcessExit{ProcessExit::Kind::unknown});
  }
  ::setpgid(pid, pid);  // also done by the child; whichever runs first wins
  open_start_gate();
  try {
    if (commit_fd_ >= 0) {
      // Before the pidfd is published: the reap (which may then start at
      // once, on a waiting thread) stops this watch.
      const std::uint64_t watch = reap_when_exited(std::make_shared<CommitWatch>(shared_from_this(), commit_fd_));
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
      // Phase launching -> reaped: nothing watches the worker and no waiter
      // helps while launching, so the reap is abandon_child's alone.
      std::lock_guard lock(mutex_);
      pidfd_ = -1;
      phase_ = Phase::reaped;
    }
    return abandon_child(pid, pidfd, 0, std::string("watching the worker: ") + e.what());
  }
  bool arm;
  {
    // Phase launching -> running: waiters may help from now on.
    std::lock_guard lock(mutex_);
    phase_ = Phase::running;
    arm = killed_ && stop_locked();
  }
  if (arm) arm_grace_timer();
  exited_->set_wait_helper(weak_from_this());
  try {
    start_progress_watch();
  } catch (...) {
    // Progress callbacks are lost; the run itself goes on.
  }
}

// Inside an isolate's worker no isolate may start: fork copied none of the
// library's threads (reaper, timers, executor) into it, and some of their
// locks may be held. Fails the run and returns true there.
bool IsolateRun::refused_inside_worker() noexcept {
  if (!in_isolate_worker()) return false;
  fail(std::make_exception_ptr(std::logic_error(
      "CancellableIsolate: an isolate cannot start inside an isolate's worker process (the "
      "library's threads do not exist there); run the inner work directly")));
  release_and_signal_exit(ProcessExit{});
  return true;
}

// No worker was started: the control block goes back to the pool unused.
void IsolateRun::give_back_control_block() noexcept {
  ControlRegion unused;
  {
    std::lock_guard lock(mutex_);
    block_ = nullptr;
    unused = std::move(control_region_);
  }
  give_back_control_region(std::move(unused));
}

// Opens the start gate (see ControlBlock): the worker may run its work.
void IsolateRun::open_start_gate() noexcept {
  auto& gate = block_->start_gate;
  if (gate.exchange(ControlBlock::kGateOpen, std::memory_order_acq_rel) == ControlBlock::kGateWaiting) {
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&gate), FUTEX_WAKE, 1, nullptr, nullptr, 0);
  }
}

// A step after the fork failed: kills the child (and its group), reaps it,
// and fails the future with what failed. The child was held at the start
// gate or is known by its pidfd, so neither its pid nor its group id can be
// a stranger's.
void IsolateRun::abandon_child(pid_t pid, int pidfd, int error, const std::string& what) noexcept {
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

void IsolateRun::start_thread() {
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

// The thread backend: the work runs on a detached thread that keeps the run
// alive; a kill before it starts skips the work (the future has failed), a
// kill while it runs only requests a stop through the token.
void IsolateRun::start_worker_thread() {
  std::thread([self = shared_from_this()] {
    bool skip;
    {
      std::lock_guard lock(self->mutex_);
      skip = self->killed_;
      if (skip) self->stop_ = Stop::none;  // (never started: nothing was stopped)
    }
    if (!skip) {
      progress_block_of_this_thread() = self->block_;
      const ThreadWorkScope scope(self->spec_.token);  // (work_stop_token() there)
      self->spec_.thread_body(self->spec_.token.stop_token());
      progress_block_of_this_thread() = nullptr;
    }
    self->release_and_signal_exit(ProcessExit{});
  }).detach();
}

// ---- The entry points of isolate_runtime.hpp and test_seams.hpp ----

void validate_isolate_options(const IsolateOptions& options, bool for_pool_task) {
  if (for_pool_task) {
    if (options.pool == nullptr) {
      throw std::invalid_argument("CancellableIsolate::run: Backend::pool needs IsolateOptions::pool");
    }
    if (options.memory_limit_bytes || options.max_result_bytes != IsolateOptions{}.max_result_bytes) {
      throw std::invalid_argument(
          "CancellableIsolate::run: with Backend::pool, the pool's PoolOptions set the memory limit and the "
          "largest result: leave memory_limit_bytes and max_result_bytes unset");
    }
  } else if (options.backend == Backend::pool) {
    throw std::invalid_argument(
        "Backend::pool runs Tasks, not closures (another program cannot run a closure): "
        "CancellableIsolate::run(task, args..., token, options)");
  }
  if (options.timeout && options.timeout->count() < 0) {
    throw std::invalid_argument("IsolateOptions::timeout must not be negative");
  }
  if (options.cpu_time_limit && options.cpu_time_limit->count() <= 0) {
    throw std::invalid_argument("IsolateOptions::cpu_time_limit must be at least one second");
  }
  if (options.on_progress && options.progress_interval.count() <= 0) {
    throw std::invalid_argument("IsolateOptions::progress_interval must be positive");
  }
  if (options.stop.grace.count() < 0) {
    throw std::invalid_argument("IsolateOptions::stop's grace must not be negative");
  }
}

std::shared_ptr<IsolateRecord> make_isolate_record() { return std::make_shared<IsolateRun>(); }

void start_isolate(const std::shared_ptr<IsolateRecord>& record, LaunchSpec spec) {
  static_cast<IsolateRun&>(*record).start(std::move(spec));
}

std::optional<Backend> backend_from_environment() {
  const char* value = std::getenv("CANCELLABLE_BACKEND");
  if (value == nullptr || value[0] == '\0') return std::nullopt;
  const std::string v = value;
  if (v == "thread") return Backend::thread;
  if (v == "process" || v == "fork") return Backend::process;
  if (v == "automatic") return std::nullopt;
  throw std::invalid_argument("CANCELLABLE_BACKEND must be thread, process or automatic, not '" + v + "'");
}

void set_fork_function(ForkFunction f) noexcept { fork_function.store(f, std::memory_order_release); }

}  // namespace cancellable::detail
