// The pool's spawner and reap: starting worker programs (posix_spawn,
// never a fork of this process), the respawn budget and back-off, handing
// each worker to the reaper, and what its end means to the pool.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

#include "runner/pool/pool_impl.hpp"
#include "runner/process/keeper.hpp"
#include "runner/process/reaper.hpp"
#include "runner/process/worker_process.hpp"
#include "worker/protocol/futex.hpp"
#include "worker/protocol/keeper_messages.hpp"


namespace cancellable::detail {

bool PoolImpl::killed_from_elsewhere(const ProcessExit& exit) {
  if (exit.kind != ProcessExit::Kind::killed) return false;
  switch (exit.signal) {
    case SIGSEGV: case SIGBUS: case SIGILL: case SIGFPE: case SIGABRT: case SIGSYS: case SIGTRAP:
      return false;  // (The program's own crash.)
    default:
      return true;
  }
}

void PoolImpl::record_start_failure_locked(const std::string& why) {
  ++stats_.start_failures;
  ++start_failures_;
  last_start_failure_ = why;
  const auto now = Clock::now();
  recent_failures_.push_back(now);
  while (!recent_failures_.empty() && now - recent_failures_.front() > options_.respawn_period) {
    recent_failures_.pop_front();
  }
  if (recent_failures_.size() >= std::max<std::size_t>(options_.respawn_budget, 1) &&
      phase_ == Phase::running) {
    phase_ = Phase::degraded;
    degraded_at_ = now;
    degraded_ = "WorkerPool: stopped starting workers after " + std::to_string(recent_failures_.size()) +
                " failed to start within " + std::to_string(options_.respawn_period.count()) +
                " ms; the last: " + why;
  }
}

void PoolImpl::spawner_loop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    // Degraded: after respawn_period, the program gets another budget
    // (whatever broke it may have been fixed: a file restored, memory
    // freed). Until then run() answers PoolDegraded.
    if (phase_ == Phase::degraded && dropped_jobs_.empty()) {
      const auto retry_at = degraded_at_ + options_.respawn_period;
      if (Clock::now() < retry_at) {
        spawner_wake_.wait_until(lock, retry_at);
        continue;
      }
      phase_ = Phase::running;
      degraded_.clear();
      recent_failures_.clear();
    }
    // Transient spawn errors (EAGAIN, ENOMEM): a growing pause, not the
    // budget.
    if (phase_ != Phase::stopping && dropped_jobs_.empty() && Clock::now() < backoff_until_) {
      spawner_wake_.wait_until(lock, backoff_until_);
      continue;
    }
    spawner_wake_.wait(lock, [&] {
      return phase_ != Phase::running || !dropped_jobs_.empty() || sweep_wanted_->load(std::memory_order_acquire) ||
             alive_count_locked() < target_locked();
    });
    if (sweep_wanted_->load(std::memory_order_acquire)) {
      std::vector<std::shared_ptr<CompleterCore<StopOutcome>>> settled;
      const bool swept = sweep_locked(settled);
      const bool room = swept && !room_waiters_.empty();
      lock.unlock();
      for (const auto& s : settled) s->complete(StopOutcome::none);
      if (room) complete_room_waiters();
      lock.lock();
      continue;  // (releases the jobs next)
    }
    if (phase_ == Phase::degraded && dropped_jobs_.empty()) continue;
    if (!dropped_jobs_.empty()) {
      auto dropped = std::move(dropped_jobs_);
      dropped_jobs_.clear();
      lock.unlock();
      dropped.clear();  // (their futures have failed already)
      lock.lock();
      continue;
    }
    if (phase_ == Phase::stopping) return;
    // (A replacement starts at once: back-to-back cancels used up the
    // standby while its replacements waited, and the next tasks waited
    // for fresh workers.)
    lock.unlock();
    std::shared_ptr<Worker> worker;
    std::string failure;
    bool transient = false;
    try {
      worker = spawn_worker();
    } catch (const std::system_error& e) {
      failure = e.what();
      transient = e.code() == std::errc::resource_unavailable_try_again || e.code() == std::errc::not_enough_memory;
    } catch (const std::exception& e) {
      failure = e.what();
    }
    lock.lock();
    if (!worker && transient) {
      backoff_ = std::min<std::chrono::milliseconds>(std::max(backoff_ * 2, std::chrono::milliseconds(10)),
                                                     std::chrono::seconds(1));
      backoff_until_ = Clock::now() + backoff_;
      ++stats_.start_failures;
      ++start_failures_;  // (The constructor gives up at the first: its caller hears it.)
      last_start_failure_ = failure;
      notify_all_threads();
      continue;
    }
    if (worker) backoff_ = std::chrono::milliseconds(0);
    if (!worker) {
      record_start_failure_locked(failure);
      fail_queue_if_degraded_locked(lock);
      notify_all_threads();
      continue;
    }
    workers_.push_back(worker);
    ++stats_.workers_started;
    ++live_drivers_;
    watch_locked(worker);
    // Started while the pool drained its last tasks: not needed any more
    // (its driver ends it, and the drain waits for its reap).
    if (intake_ == Intake::drained) kill_locked(*worker);
    try {
      // (The thread's closure gives its reference to driver_loop, which
      // lets go of it before the pool may be destroyed.)
      std::thread([self = this, w = worker]() mutable { self->driver_loop(std::move(w)); }).detach();
    } catch (const std::system_error&) {
      --live_drivers_;
      kill_locked(*worker);
      worker->state = Worker::State::finished;
      record_start_failure_locked("could not start a thread to drive the worker");
    }
    notify_all_threads();
  }
}

void PoolImpl::fail_queue_if_degraded_locked(std::unique_lock<std::mutex>& lock) {
  if (phase_ != Phase::degraded || alive_count_locked() > 0) return;
  std::vector<std::shared_ptr<PoolJob>> failed;
  for (const auto& e : queue_) {
    e->state = Entry::State::done;
    failed.push_back(std::move(e->job));
  }
  queue_.clear();
  const std::string why = degraded_;
  lock.unlock();
  for (const auto& job : failed) {
    job->fail(std::make_exception_ptr(PoolDegraded(why)));
    settle(*job);
  }
  complete_room_waiters();  // (run() now answers at once: PoolDegraded.)
  lock.lock();
}

std::shared_ptr<Worker> PoolImpl::spawn_worker() {
  auto worker = std::make_shared<Worker>();
  worker->memory = std::make_unique<SlotMemory>(options_.max_argument_bytes,
                                                std::max<std::size_t>(options_.max_result_bytes, 65536));
  std::vector<std::string> args = {options_.worker_program.string(), kPoolWorkerFlag, std::to_string(::getpid())};
  if (options_.memory_limit_bytes) args.push_back(std::to_string(*options_.memory_limit_bytes));
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  // Descriptor 3 is the worker's memory; every descriptor from 4 up is
  // closed in the child.
  const pid_t pid = spawn_program(argv.data(), worker->memory->fd, kPoolSlotDescriptor, true);
  if (pid < 0) throw std::system_error(-pid, std::generic_category(), "posix_spawn");
  ::close(worker->memory->fd);
  worker->memory->fd = -1;
  worker->pid = pid;
  const int pidfd = open_pidfd(pid);
  if (pidfd < 0) {
    const int e = errno;
    ::kill(pid, SIGKILL);  // (Our unreaped child: its pid cannot be reused yet.)
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    throw std::system_error(e, std::generic_category(), "pidfd_open");
  }
  worker->pidfd = pidfd;
  // The keeper kills the worker's group if this process dies (the worker
  // itself dies by PR_SET_PDEATHSIG; what its tasks started would not).
  // Without a keeper (it could not start), that protection is missing.
  try {
    offer_keeper_program(options_.worker_program);
    keeper_register(ensure_keeper_started(), pid);
  } catch (const std::system_error&) {
  }
  return worker;
}

void PoolImpl::watch_locked(const std::shared_ptr<Worker>& worker) {
  struct Watch final : Reapable {
    std::weak_ptr<PoolImpl> pool;
    std::shared_ptr<Worker> worker;
    int pidfd() const noexcept override { return worker->pidfd; }
    void on_process_exit() noexcept override {
      if (auto p = pool.lock()) p->reap(worker);
    }
  };
  try {
    auto watch = std::make_shared<Watch>();
    watch->pool = weak_from_this();
    watch->worker = worker;
    worker->watch = reap_when_exited(std::move(watch));
  } catch (const std::exception&) {
    worker->watch = 0;
    kill_locked(*worker);
  }
}

void PoolImpl::reap(const std::shared_ptr<Worker>& worker) {
  std::unique_lock lock(mutex_);
  if (worker->reaped()) return;
  const ReapedWorker reaped = reap_worker(worker->pidfd, worker->pid, worker->killed());
  const ProcessExit exit = reaped.exit;
  worker->cpu_seconds = reaped.cpu_seconds;
  worker->close_pidfd();  // (now: the reaper's thread may hold the worker a little longer)
  worker->process = worker->killed() ? Worker::Process::killed_reaped : Worker::Process::died;
  auto settled = std::move(worker->settle_at_reap);
  worker->settle_at_reap.clear();
  // (The task it ran, if any, is settled by its conclusion, which follows
  // at once: after the statistics count it.)
  worker->exit = exit;
  const bool driver_waits = worker->state == Worker::State::busy || worker->state == Worker::State::starting ||
                            worker->state == Worker::State::stopping;
  if (driver_waits) {
    // Its driver waits on the worker's word (the worker is gone: its
    // memory is written by nobody else now).
    std::uint32_t expected = worker->memory->slot->response.load(std::memory_order_acquire);
    if (expected != PoolSlot::kKilled) {
      worker->memory->slot->response.store(PoolSlot::kDied, std::memory_order_release);
    }
  }
  if (worker->state == Worker::State::finished) erase_locked(worker);
  const auto drained = drain_done_locked();
  lock.unlock();
  for (const auto& waiter : drained) waiter->complete();
  // Whoever waits for the end of the worker's task first; then its
  // driver, whose work can wait.
  settle_all(settled);
  if (driver_waits) futex_wake_all(worker->memory->slot->response);
  notify_all_threads();
}

void PoolImpl::erase_locked(const std::shared_ptr<Worker>& worker) {
  workers_.erase(std::remove(workers_.begin(), workers_.end(), worker), workers_.end());
}

}  // namespace cancellable::detail
