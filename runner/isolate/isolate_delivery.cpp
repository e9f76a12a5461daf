// Delivering an isolate run's outcome to its future, releasing what the run
// held, completing exited(), and progress. See isolate_run.hpp for the
// lifecycle (Delivery, Phase::finished).
#include <signal.h>
#include <unistd.h>

#include <string>
#include <system_error>
#include <utility>

#include "cancellable/detail/library_thread.hpp"
#include "cancellable/executor.hpp"
#include "runner/isolate/isolate_run.hpp"
#include "runner/process/worker_failure.hpp"
#include "worker/protocol/result_channel.hpp"

namespace cancellable::detail {

namespace {

bool thread_exists(pid_t tid) { return ::access(("/proc/self/task/" + std::to_string(tid)).c_str(), F_OK) == 0; }

}  // namespace

IsolateRun::IsolateRun() : exited_(std::make_shared<FutureState<ProcessExit>>()) {}

IsolateRun::~IsolateRun() {
  if (pidfd_ >= 0) ::close(pidfd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
  if (commit_fd_ >= 0) ::close(commit_fd_);
}

Future<ProcessExit> IsolateRun::exited() const { return Future<ProcessExit>(exited_); }

std::optional<Progress> IsolateRun::progress() const {
  std::lock_guard lock(mutex_);
  if (block_) return block_->read_progress();
  return last_progress_;
}

// Reaper thread: the worker process signalled that its outcome is committed
// (deliver_at_commit). Delivers it now, before the exit.
void IsolateRun::on_commit() noexcept {
  bool claimed;
  {
    std::lock_guard lock(mutex_);
    claimed = claim_committed_outcome_locked();
  }
  if (claimed) deliver_claimed_outcome();
}

// Under mutex_, once the worker signalled its commit: Delivery pending ->
// at_commit, unless it was claimed already, the run was killed or reaped, or
// nothing is committed (a thread the work left behind wrote the
// descriptor?): the exit then decides.
bool IsolateRun::claim_committed_outcome_locked() noexcept {
  if (delivery_ != Delivery::pending || killed_ || phase_ >= Phase::reaped || !block_) return false;
  if (static_cast<Outcome>(block_->outcome.load(std::memory_order_acquire)) == Outcome::none) return false;
  delivery_ = Delivery::at_commit;
  return true;
}

// After a claim: the worker writes nothing any more, so its memory is free
// for the next run; the outcome is delivered on this thread, or on the
// default executor if decoding runs user code and this is a library thread.
// (spec_ stays: the run is released only after deliver_committed.)
void IsolateRun::deliver_claimed_outcome() noexcept {
  release_worker_memory();
  if (spec_.deliver_is_trivial || !on_library_thread()) return deliver_committed();
  try {
    default_executor().post([self = shared_from_this()] { self->deliver_committed(); });
  } catch (...) {
    deliver_committed();
  }
}

// Delivers a claimed outcome (Delivery at_commit -> at_commit_done); releases
// the run if the reap came first.
void IsolateRun::deliver_committed() noexcept {
  deliver_outcome(ProcessExit{});  // (an outcome is committed: the exit is not needed)
  remove_result_shm_if_claimed();
  std::optional<ProcessExit> exit;
  {
    std::lock_guard lock(mutex_);
    delivery_ = Delivery::at_commit_done;
    exit = exit_after_delivery_;
  }
  // The reap came first and left the release to this thread.
  if (exit) release_and_signal_exit(*exit);
}

// The worker is gone (or has committed its outcome and writes no more): what
// it wrote into is free for the next run.
void IsolateRun::release_worker_memory() noexcept {
  std::shared_ptr<void> memory;
  {
    std::lock_guard lock(mutex_);
    memory = std::move(spec_.worker_memory);
  }
}

// After the reap (Delivery after_exit), on the reaping thread or the default
// executor.
void IsolateRun::finish_process(const ProcessExit& exit) noexcept {
  deliver_outcome(exit);
  remove_result_shm_if_claimed();
  release_and_signal_exit(exit);
}

// Completes the future with the worker's outcome (exit: how the process
// ended, for a worker that committed none), unless the run was killed (its
// future failed already).
void IsolateRun::deliver_outcome(const ProcessExit& exit) noexcept {
  {
    std::lock_guard lock(mutex_);
    if (killed_) return;
  }
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
      case Outcome::too_large:  // (a fork isolate's worker never writes it)
        fail(crash_error(exit));
        break;
    }
  } catch (...) {
    fail(std::current_exception());
  }
}

// Removes the result object by the parent's own copy of its name (the worker
// can write the copy in the control block). The claimed flag only saves a
// system call when no object was made; a worker lying about it could only
// leave its own object behind.
void IsolateRun::remove_result_shm_if_claimed() noexcept {
  if (block_ && block_->shm_claimed.load(std::memory_order_acquire)) {
    remove_result_shm(shm_name_.c_str());
  }
}

// A setup step the worker reported as failed, as the error to fail with.
std::exception_ptr IsolateRun::worker_setup_error() const {
  const auto failure = block_->setup_failure();
  if (!failure) return nullptr;
  return std::make_exception_ptr(std::system_error(
      failure->second, std::generic_category(),
      std::string("CancellableIsolate: the worker could not ") + describe(failure->first)));
}

std::exception_ptr IsolateRun::crash_error(const ProcessExit& exit) const {
  // (The worker's whole CPU time is this work's: a fork runs one.)
  const bool cpu_limit = spec_.options.cpu_time_limit && exit.kind == ProcessExit::Kind::killed &&
                         (exit.signal == SIGXCPU || (exit.signal == SIGKILL &&
                                                     cpu_seconds_ >= spec_.options.cpu_time_limit->count()));
  if (!cpu_limit && exit.kind == ProcessExit::Kind::killed && exit.signal == SIGKILL && forking_thread_ > 0 &&
      !thread_exists(forking_thread_)) {
    // PR_SET_PDEATHSIG fires when the thread that forked exits, not the
    // process: the likeliest killer (see isolate.hpp).
    return std::make_exception_ptr(WorkerCrashed(
        exit, "was killed when the thread that started it (thread " + std::to_string(forking_thread_) +
                  ") exited: PR_SET_PDEATHSIG follows that thread; start isolates from threads "
                  "that outlive them"));
  }
  return worker_end_error(exit, spec_.options.cpu_time_limit, cpu_seconds_);
}

void IsolateRun::fail(std::exception_ptr error) noexcept {
  try {
    if (spec_.fail) spec_.fail(std::move(error));
  } catch (...) {
  }
}

// Phase -> finished: releases everything the run held, then completes exited().
void IsolateRun::release_and_signal_exit(const ProcessExit& ended) noexcept {
  ProcessExit exit = ended;
  bool exit_signalled;
  std::shared_ptr<Timer> grace_timer;
  std::shared_ptr<Timer> timer;
  std::function<void(const Progress&)> on_progress;
  std::optional<Progress> final_progress;
  LaunchSpec spec;
  ControlRegion region;
  {
    std::lock_guard lock(mutex_);
    if (block_) final_progress = block_->read_progress();
    last_progress_ = final_progress;
    block_ = nullptr;
    region = std::move(control_region_);
    heap_block_.reset();
    timer = std::move(progress_timer_);
    grace_timer = std::move(grace_timer_);
    exit_signalled = phase_ == Phase::abandoned;  // (exited() completed at the grace's end)
    phase_ = Phase::finished;
    switch (stop_) {
      case Stop::none: exit.stop = StopOutcome::none; break;
      // (A kill that found the worker exited already did nothing: it
      // ended by itself.)
      case Stop::killed:
        exit.stop = exit.kind == ProcessExit::Kind::exited ? StopOutcome::none : StopOutcome::killed;
        break;
      case Stop::asked: exit.stop = StopOutcome::stopped; break;
      case Stop::killed_after_grace:
        exit.stop = exit.kind == ProcessExit::Kind::exited ? StopOutcome::stopped : StopOutcome::killed_after_grace;
        break;
      case Stop::abandoned: exit.stop = StopOutcome::abandoned_after_grace; break;
    }
    if (final_progress && final_progress != reported_progress_) on_progress = spec_.options.on_progress;
    // Drop the work, its captures and the future's core (outside the lock):
    // this breaks the cycle core -> run -> spec -> core.
    spec = std::move(spec_);
    spec_ = LaunchSpec{};
  }
  give_back_control_region(std::move(region));
  if (timer) timer->cancel();
  if (grace_timer) grace_timer->cancel();
  if (on_progress) {
    try {
      default_executor().post([on_progress, p = *final_progress] { on_progress(p); });
    } catch (...) {
    }
  }
  if (!exit_signalled) exited_->set_value(exit);
  if (on_library_thread()) {
    // The work's captures are user objects: destroy them on the executor,
    // after the waiters of exited() have been woken.
    try {
      default_executor().post([spec = std::make_shared<LaunchSpec>(std::move(spec))] {});
    } catch (...) {
    }
  }
}

void IsolateRun::start_progress_watch() {
  if (!has_progress_callback_) return;
  std::weak_ptr<IsolateRun> weak = weak_from_this();
  auto timer = start_timer(progress_interval_, [weak] {
    if (auto self = weak.lock()) self->progress_tick();
  });
  std::lock_guard lock(mutex_);
  if (phase_ != Phase::finished) progress_timer_ = std::move(timer);
}

// Timer thread: hands changed progress to the default executor.
void IsolateRun::progress_tick() {
  std::function<void(const Progress&)> on_progress;
  std::optional<Progress> p;
  {
    std::lock_guard lock(mutex_);
    if (phase_ == Phase::finished || !block_) return;
    p = block_->read_progress();
    if (p && p != reported_progress_) {
      reported_progress_ = p;
      on_progress = spec_.options.on_progress;
    }
  }
  if (on_progress) default_executor().post([on_progress, p = *p] { on_progress(p); });
  start_progress_watch();
}

}  // namespace cancellable::detail
