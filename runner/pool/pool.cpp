// The pool's facade: WorkerPool, run()'s hand-over or queueing, cancel,
// room(), stop(); and what every part asks of the workers' states.
#include <pthread.h>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <system_error>
#include <filesystem>

#include "cancellable/exceptions.hpp"
#include "runner/pool/pool_impl.hpp"
#include "runner/process/reaper.hpp"
#include "runner/process/worker_process.hpp"
#include "worker/protocol/futex.hpp"
#include "worker/worker_program.hpp"

namespace cancellable {

PoolQueueFull::PoolQueueFull(std::size_t max_queue)
    : PoolError("WorkerPool: the queue is full (" + std::to_string(max_queue) +
                         " tasks wait already; PoolOptions::max_queue, or wait on room())") {}

namespace detail {

void PoolImpl::start() {
  try {
    ensure_reaper_started();
  } catch (const std::system_error& e) {
    throw PoolStartFailed(std::string("WorkerPool: ") + e.what());
  }
  spawner_ = std::thread([this] {
    ::pthread_setname_np(::pthread_self(), "cancel-spawner");
    spawner_loop();
  });
  // Wait until every first worker is ready, or one failed.
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return ready_count_locked() >= target_locked() || start_failures_ > 0; });
  if (start_failures_ > 0) {
    const std::string why = last_start_failure_;
    lock.unlock();
    stop();
    throw PoolStartFailed("WorkerPool: the worker program " + options_.worker_program.string() +
                            " could not start: " + why);
  }
}

std::function<void()> PoolImpl::submit(std::shared_ptr<PoolJob> job) {
  auto entry = std::make_shared<Entry>();
  entry->job = std::move(job);
  entry->pool = weak_from_this();
  entry->settles = entry->job->settled != nullptr;
  if (entry->job->state) entry->job->state->set_wait_helper(entry);
  std::shared_ptr<Worker> handed_to;
  std::uint32_t seq = 0;
  bool wake_spawner = false;
  // Futures of tasks swept below: completed once the lock is released,
  // whether or not run() then throws.
  struct Swept {
    std::vector<std::shared_ptr<CompleterCore<StopOutcome>>> settled;
    ~Swept() {
      for (const auto& s : settled) s->complete(StopOutcome::none);
    }
  } swept;
  {
    std::lock_guard lock(mutex_);
    if (phase_ == Phase::stopping) throw PoolDegraded("WorkerPool: the pool is stopping");
    if (intake_ != Intake::open) throw PoolClosed("WorkerPool: the pool is draining or shut down: it takes no more tasks");
    if (phase_ == Phase::degraded) throw PoolDegraded(degraded_);
    // (A task handed straight to a ready worker takes no room in the
    // queue: with max_queue 0, run() succeeds while a worker is free.)
    if (!has_room_locked() && sweep_wanted_->load(std::memory_order_acquire)) {
      // Cancelled tasks the sweep has not removed yet take no room.
      if (sweep_locked(swept.settled)) spawner_wake_.notify_all();  // (it releases the jobs)
    }
    if (!has_room_locked()) throw PoolQueueFull(options_.max_queue);
    wake_spawner = standby_ == Standby::shrunk;
    standby_ = Standby::kept;  // (if idle workers had shrunk it away)
    if (queue_.empty() && busy_count_locked() < options_.size) {
      // A slot is free: is a worker ready for it?
      bool idle = false;
      for (const auto& w : workers_) idle = idle || w->state == Worker::State::idle;
      ++(idle ? stats_.slot_ready : stats_.slot_waited);
    }
    // A free slot and a ready worker: hand the task over here, without
    // waking the worker's driver first.
    if (queue_.empty() && busy_count_locked() < options_.size) {
      for (const auto& w : workers_) {
        if (w->state == Worker::State::idle && !w->killed() && !w->reaped() && !w->handed) {
          handed_to = w;
          break;
        }
      }
    }
    if (handed_to) {
      reserve_locked(*handed_to, entry);
      seq = handed_to->posted;
    } else {
      queue_.push_back(entry);  // (has_room_locked(): there is room for it.)
    }
  }
  if (handed_to) {
    auto refused = post(*handed_to, *entry, seq);
    {
      std::lock_guard lock(mutex_);
      if (refused) --handed_to->posted;  // never reached the worker
      handed_to->refused = std::move(refused);
      handed_to->handed = entry;
    }
  }
  // The worker's driver must know of the hand-over, an idle driver of a
  // queued task; the spawner only of a standby wanted again (nothing else
  // here changes what it waits for: waking it for each queued task cost a
  // context switch per run(), 20,000 of them in pool_throughput).
  changed_.notify_all();
  if (wake_spawner) spawner_wake_.notify_all();
  std::weak_ptr<PoolImpl> weak = weak_from_this();
  return [weak, entry, sweep = sweep_wanted_] {
    if (entry->state.load(std::memory_order_acquire) == Entry::State::queued && !entry->settles) {
      // Never started, and its future has failed already (inside
      // cancel()). Left in the queue for the spawner's sweep: one cancel()
      // over 1,000 queued tasks costs 1,000 flag reads and one wake, not
      // 1,000 turns of the pool's lock fought with the woken threads. A
      // driver that takes it meanwhile sees the token and never posts it.
      if (sweep->load(std::memory_order_acquire) || sweep->exchange(true, std::memory_order_acq_rel)) return;
      if (auto pool = weak.lock()) pool->wake_spawner();
      return;
    }
    if (auto pool = weak.lock()) pool->cancel(entry);
  };
}

void PoolImpl::wake_spawner() {
  std::lock_guard lock(mutex_);  // (the spawner checks the flag under it)
  spawner_wake_.notify_all();
}

bool PoolImpl::has_room_locked() const {
  if (queue_.size() < options_.max_queue) return true;
  if (!queue_.empty() || busy_count_locked() >= options_.size) return false;
  for (const auto& w : workers_) {
    if (w->state == Worker::State::idle && !w->killed() && !w->reaped() && !w->handed) return true;
  }
  return false;
}

Future<void> PoolImpl::room() {
  auto core = std::make_shared<CompleterCore<void>>(CancellationToken::none(), nullptr);
  {
    std::lock_guard lock(mutex_);
    if (!has_room_locked() && phase_ == Phase::running) {
      room_waiters_.push_back(core);
      return core->future();
    }
  }
  core->complete();
  return core->future();
}

void PoolImpl::stop() noexcept {
  std::vector<std::shared_ptr<PoolJob>> abandoned;
  {
    std::lock_guard lock(mutex_);
    if (phase_ == Phase::stopping) return;
    phase_ = Phase::stopping;
    for (const auto& e : queue_) {
      e->state = Entry::State::done;
      abandoned.push_back(std::move(e->job));
    }
    queue_.clear();
    for (const auto& w : workers_) kill_locked(*w);
  }
  notify_all_threads();
  for (const auto& job : abandoned) {
    job->fail(std::make_exception_ptr(CancelledException("the worker pool was destroyed")));
    settle(*job);
  }
  fail_room_waiters();
  // The spawner first: one in the middle of a spawn adds a worker, and its
  // driver, after stopping_ was set (that driver then stops the worker).
  // Waiting for the drivers before it could miss that one, which would
  // then outlive the pool.
  if (spawner_.joinable()) spawner_.join();
  {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return live_drivers_ == 0; });
  }
  {
    std::unique_lock lock(mutex_);
    auto dropped = std::move(dropped_jobs_);
    dropped_jobs_.clear();
    lock.unlock();
  }
  {
    // Every worker was killed: wait for the reaper to reap them all, and
    // reap here those it does not watch.
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] {
      return std::all_of(workers_.begin(), workers_.end(), [](const auto& w) { return w->watch == 0; });
    });
    std::vector<std::pair<std::shared_ptr<CompleterCore<StopOutcome>>, StopOutcome>> settled;
    for (const auto& w : workers_) {
      (void)reap_worker(w->pidfd, w->pid, w->killed());
      w->close_pidfd();
      for (auto& s : w->settle_at_reap) settled.push_back(std::move(s));
      w->settle_at_reap.clear();
    }
    workers_.clear();
    lock.unlock();
    settle_all(settled);
  }
}

std::size_t PoolImpl::ready_count_locked() const {
  std::size_t n = 0;
  for (const auto& w : workers_) {
    n += w->state == Worker::State::idle || w->state == Worker::State::busy || w->state == Worker::State::stopping;
  }
  return n;
}

std::size_t PoolImpl::alive_count_locked() const {
  std::size_t n = 0;
  for (const auto& w : workers_) n += w->state != Worker::State::finished && !w->reaped();
  return n;
}

std::size_t PoolImpl::idle_count_locked() const {
  std::size_t n = 0;
  for (const auto& w : workers_) n += w->state == Worker::State::idle;
  return n;
}

std::size_t PoolImpl::busy_count_locked() const {
  std::size_t n = 0;
  for (const auto& w : workers_) n += w->state == Worker::State::busy && !w->killed();
  return n;
}

void PoolImpl::kill_locked(Worker& w) {
  if (w.reaped()) return;
  if (!w.killed()) {
    w.process = Worker::Process::killed;
    // The worker and what its task started, at once (also when the host
    // ignores SIGCHLD, and no zombie would be left to pin the group id
    // for the reap's group kill).
    kill_worker_and_group(w.pidfd, w.pid);
  }
  if (w.state == Worker::State::busy || w.state == Worker::State::starting || w.state == Worker::State::stopping) {
    // Nothing but the pool writes this word from now on. A thread blocked
    // in the task's get() (see help()) wakes now; without a reaper, the
    // driver too (nothing else would wake it).
    w.memory->slot->response.store(PoolSlot::kKilled, std::memory_order_release);
    futex_wake_kinds(w.memory->slot->response, w.watch == 0 ? FUTEX_BITSET_MATCH_ANY : kWaiterKind);
  }
}

void PoolImpl::cancel(const std::shared_ptr<Entry>& entry) {
  bool room = false;
  bool wake = true;
  std::shared_ptr<CompleterCore<StopOutcome>> settled;
  {
    std::lock_guard lock(mutex_);
    if (entry->state == Entry::State::queued) {
      // Never started: the future has failed already; its PoolRun's
      // settled() completes now.
      settled = drop_queued_locked(entry);
      room = !room_waiters_.empty();
    } else if (entry->state == Entry::State::posted && entry->worker &&
               !entry->worker->reaped() && !entry->worker->killed()) {
      // (Not posted yet: post() sees the cancelled token and never posts
      // it, and the worker lives on. Dead already: the task is counted as
      // crashed when concluded; killed, it is not: each task counts once.)
      stop_running_locked(*entry, entry->job->stop.value_or(options_.stop));
      // The slot is free now: only a queued task needs to know at once
      // (the standby's replacement starts at the reap).
      wake = !queue_.empty();
    }
  }
  if (wake) notify_all_threads();
  if (settled) settled->complete(StopOutcome::none);
  if (room) complete_room_waiters();
}

bool PoolImpl::sweep_locked(std::vector<std::shared_ptr<CompleterCore<StopOutcome>>>& settled) {
  sweep_wanted_->store(false, std::memory_order_release);
  const auto cancelled = [](const std::shared_ptr<Entry>& e) { return e->job->token.is_cancelled(); };
  bool any = false;
  for (const auto& e : queue_) {
    if (!cancelled(e)) continue;
    any = true;
    e->state = Entry::State::done;
    if (auto s = std::exchange(e->job->settled, nullptr)) settled.push_back(std::move(s));
    dropped_jobs_.push_back(std::move(e->job));  // (released by the spawner)
  }
  if (!any) return false;
  std::erase_if(queue_, [](const std::shared_ptr<Entry>& e) { return e->job == nullptr; });
  drained_if_idle_locked();
  return true;
}

void PoolImpl::stop_running_locked(Entry& entry, const StopPolicy& policy) {
  Worker& w = *entry.worker;
  if (policy.grace.count() > 0 && w.state == Worker::State::busy) {
    // Graded: the task is asked to stop and its slot is free; the worker
    // serves again if it returns within the grace.
    w.state = Worker::State::stopping;
    w.stop = StopOutcome::stopped;
    const auto deadline = Clock::now() + policy.grace;
    w.grace_deadline_ns.store(std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count(),
                              std::memory_order_release);
    // A thread blocked in the task's get() first, to see its future
    // failed; then the worker; then its driver, to wait with the deadline.
    futex_wake_kinds(w.memory->slot->response, kWaiterKind);
    ask_worker_to_stop(*w.memory->slot, entry.seq, w.pidfd, w.pid, policy.terminate_first);
    futex_wake_kinds(w.memory->slot->response, kDriverKind);
    return;
  }
  if (w.state == Worker::State::stopping) return;  // (asked already)
  ++stats_.tasks_killed;
  w.stop = StopOutcome::killed;
  kill_locked(w);
}

void PoolImpl::drained_if_idle_locked() {
  if (intake_ != Intake::draining || !queue_.empty()) return;
  for (const auto& w : workers_) {
    if (w->running || w->handed) return;
  }
  intake_ = Intake::drained;
  for (const auto& w : workers_) kill_locked(*w);
  notify_all_threads();
}

std::vector<std::shared_ptr<CompleterCore<void>>> PoolImpl::drain_done_locked() {
  // (A worker leaves the list once it is both reaped and finished by its
  // driver: then nothing of it is left.)
  if (intake_ != Intake::drained || !workers_.empty()) return {};
  return std::exchange(drain_waiters_, {});
}

Future<void> PoolImpl::drain(std::optional<StopPolicy> stop_running) {
  auto core = std::make_shared<CompleterCore<void>>(CancellationToken::none(), nullptr);
  std::vector<std::shared_ptr<PoolJob>> abandoned;
  std::vector<std::shared_ptr<PoolJob>> stopped;
  std::vector<std::shared_ptr<Worker>> stopped_workers;
  std::vector<std::shared_ptr<CompleterCore<void>>> done;
  {
    std::lock_guard lock(mutex_);
    if (phase_ == Phase::stopping) {
      core->complete();
      return core->future();
    }
    if (intake_ == Intake::open) intake_ = Intake::draining;
    drain_waiters_.push_back(core);
    if (stop_running) {
      // Queued tasks never start; running ones are stopped by the policy.
      for (const auto& e : queue_) {
        e->state = Entry::State::done;
        abandoned.push_back(std::move(e->job));
      }
      queue_.clear();
      for (const auto& w : workers_) {
        const auto entry = w->running;
        if (!entry || entry->state != Entry::State::posted || w->killed() || w->reaped()) continue;
        if (entry->job) stopped.push_back(entry->job);
        stopped_workers.push_back(w);
        stop_running_locked(*entry, *stop_running);
      }
    }
    drained_if_idle_locked();
    done = drain_done_locked();
  }
  notify_all_threads();
  const auto closed = std::make_exception_ptr(CancelledException("the worker pool was shut down"));
  for (const auto& job : abandoned) {
    job->fail(closed);
    settle(*job);
  }
  for (const auto& job : stopped) job->fail(closed);  // (at once: the worker stops in the background)
  // A thread blocked in such a task's get() waits on its worker's word:
  // woken, it sees the failed future.
  for (const auto& w : stopped_workers) futex_wake_kinds(w->memory->slot->response, kWaiterKind);
  fail_room_waiters();
  for (const auto& waiter : done) waiter->complete();
  return core->future();
}

void PoolImpl::grace_over(const std::shared_ptr<Worker>& w, std::uint32_t seq) {
  {
    std::lock_guard lock(mutex_);
    // (Ended meanwhile: its word has changed, or will at its reap.)
    if (w->state != Worker::State::stopping || w->posted != seq || w->killed() || w->reaped()) {
      w->grace_deadline_ns.store(0, std::memory_order_relaxed);
      return;
    }
    ++stats_.tasks_killed;
    w->stop = StopOutcome::killed_after_grace;
    kill_locked(*w);
  }
  notify_all_threads();
}

std::shared_ptr<CompleterCore<StopOutcome>> PoolImpl::drop_queued_locked(std::shared_ptr<Entry> entry) {
  const auto at = std::find(queue_.begin(), queue_.end(), entry);
  if (at != queue_.end()) queue_.erase(at);
  entry->state = Entry::State::done;
  auto settled = std::exchange(entry->job->settled, nullptr);
  // Not destroyed here: this may run inside the cancellation hook of the
  // future's core, which the job owns. The spawner lets go of it.
  dropped_jobs_.push_back(std::move(entry->job));
  drained_if_idle_locked();
  return settled;
}

void PoolImpl::complete_room_waiters() {
  std::vector<std::shared_ptr<CompleterCore<void>>> waiters;
  {
    std::lock_guard lock(mutex_);
    if (!has_room_locked() && phase_ != Phase::degraded) return;
    waiters.swap(room_waiters_);
  }
  for (const auto& w : waiters) w->complete();
}

void PoolImpl::fail_room_waiters() {
  std::vector<std::shared_ptr<CompleterCore<void>>> waiters;
  {
    std::lock_guard lock(mutex_);
    waiters.swap(room_waiters_);
  }
  for (const auto& w : waiters) {
    w->complete_error(std::make_exception_ptr(CancelledException("the worker pool was destroyed")));
  }
}

void Entry::help_wait(const FutureStateBase& state) noexcept {
  auto keep = shared_from_this();
  if (auto p = pool.lock()) p->help(*this, state);
}

std::shared_ptr<PoolImpl> make_pool(PoolOptions options) {
  if (std::getenv(kPoolWorkerEnvironment) != nullptr) {
    throw std::logic_error("WorkerPool: a pool cannot be created inside a pool worker");
  }
  if (options.worker_program.empty()) {
    // A program that calls worker_main is its own worker program.
    if (!worker_main_was_called()) {
      throw std::invalid_argument(
          "WorkerPool: PoolOptions::worker_program is empty, and this program did not call "
          "cancellable::worker_main (which makes it its own pools' worker program)");
    }
    std::error_code error;
    options.worker_program = std::filesystem::read_symlink("/proc/self/exe", error);
    if (error) throw std::system_error(error, "WorkerPool: reading /proc/self/exe for the worker program");
  }
  if (options.stop.grace.count() < 0) throw std::invalid_argument("WorkerPool: PoolOptions::stop's grace must not be negative");
  if (options.size == 0) throw std::invalid_argument("WorkerPool: PoolOptions::size must be at least 1");
  if (options.start_timeout <= std::chrono::milliseconds::zero()) {
    throw std::invalid_argument("WorkerPool: PoolOptions::start_timeout must be positive");
  }
  auto pool = std::make_shared<PoolImpl>(std::move(options));
  pool->start();
  return pool;
}

std::function<void()> submit_pool_job(const std::shared_ptr<PoolImpl>& pool, std::shared_ptr<PoolJob> job) {
  return pool->submit(std::move(job));
}

PoolStats pool_stats(const PoolImpl& pool) { return pool.stats(); }
std::size_t pool_size(const PoolImpl& pool) noexcept { return pool.size(); }
Future<void> pool_room(const std::shared_ptr<PoolImpl>& pool) { return pool->room(); }
void stop_pool(PoolImpl& pool) noexcept { pool.stop(); }
const std::shared_ptr<PoolImpl>& pool_impl_of(const WorkerPool& pool) noexcept { return pool.impl_; }

}  // namespace detail

WorkerPool::WorkerPool(PoolOptions options) : impl_(detail::make_pool(std::move(options))) {}
WorkerPool::~WorkerPool() { detail::stop_pool(*impl_); }
Future<void> WorkerPool::room() const { return detail::pool_room(impl_); }
Future<void> WorkerPool::drain() { return impl_->drain(std::nullopt); }
Future<void> WorkerPool::shutdown(StopPolicy running) { return impl_->drain(running); }
PoolStats WorkerPool::stats() const { return detail::pool_stats(*impl_); }

}  // namespace cancellable
