// A worker's driver: waits for the worker to be ready, takes tasks,
// hands them over through the worker's memory, and concludes each (or
// lets a thread blocked in the task's get() conclude it: help()).
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include "cancellable/exceptions.hpp"
#include "cancellable/executor.hpp"
#include "runner/pool/pool_impl.hpp"
#include "runner/process/worker_failure.hpp"
#include "runner/process/worker_process.hpp"
#include "worker/protocol/futex.hpp"
#include "worker/protocol/result_channel.hpp"

namespace cancellable::detail {

namespace {

std::size_t resident_bytes(pid_t pid) {
  std::ifstream statm("/proc/" + std::to_string(pid) + "/statm");
  std::size_t size = 0, resident = 0;
  if (!(statm >> size >> resident)) return 0;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

}  // namespace

std::uint32_t PoolImpl::wait_response(const Worker& w, std::uint32_t from, std::optional<Clock::time_point> deadline) {
  auto& word = w.memory->slot->response;
  for (;;) {
    const std::uint32_t r = word.load(std::memory_order_acquire);
    if (r != from) return r;
    if (deadline) {
      const auto left = *deadline - Clock::now();
      if (left <= Clock::duration::zero()) return r;
      const std::chrono::nanoseconds ns = left;
      futex_wait_kind(word, r, kDriverKind, &ns);
    } else {
      futex_wait_kind(word, r, kDriverKind);
    }
  }
}

std::uint32_t PoolImpl::wait_answer(const Worker& w, std::uint32_t from) {
  auto& word = w.memory->slot->response;
  for (;;) {
    const std::uint32_t r = word.load(std::memory_order_acquire);
    if (r != from) return r;
    const std::int64_t deadline = w.grace_deadline_ns.load(std::memory_order_acquire);
    if (deadline == 0) {
      futex_wait_kind(word, r, kDriverKind);
      continue;
    }
    const std::chrono::nanoseconds left =
        std::chrono::nanoseconds(deadline) - Clock::now().time_since_epoch();
    if (left <= std::chrono::nanoseconds::zero()) return r;
    futex_wait_kind(word, r, kDriverKind, &left);
  }
}

void PoolImpl::driver_loop(std::shared_ptr<Worker> worker) {
  ::pthread_setname_np(::pthread_self(), "cancel-driver");
  drive(worker);
  // The last thing this thread does with the pool: its reference to the
  // worker goes first, then the count stop() waits on.
  worker.reset();
  std::lock_guard lock(mutex_);
  --live_drivers_;
  notify_all_threads();
}

void PoolImpl::drive(const std::shared_ptr<Worker>& w) {
  const std::uint32_t ready = wait_response(*w, PoolSlot::kStarting, Clock::now() + options_.start_timeout);
  std::unique_lock lock(mutex_);
  if (ready != PoolSlot::kReady || w->reaped() || w->killed()) {
    if (phase_ != Phase::stopping) {
      std::string why;
      if (ready == PoolSlot::kStarting) {
        why = "it was not ready within " + std::to_string(options_.start_timeout.count()) +
              " ms (is it a worker program? It must call cancellable::worker_main first thing in main)";
      } else {
        // The reaper has the exit status once it reaped the worker.
        changed_.wait(lock, [&] { return w->reaped() || w->watch == 0; });
        const auto setup = w->memory->slot->setup_failure();
        if (setup && w->exit.kind == ProcessExit::Kind::exited) {
          // (The step and errno the worker wrote: checked, and only text.)
          why = std::string("it could not ") + describe(setup->first) + ": " +
                std::generic_category().message(setup->second) + " (it " + w->exit.str() + ")";
        } else {
          why = "it " + w->exit.str() +
                " before it was ready (is it a worker program? It must call cancellable::worker_main first "
                "thing in main)";
        }
      }
      // A kill from elsewhere (kill -9, the OOM killer, a SIGTERM to the
      // group) says nothing about the program: it is replaced, and the
      // respawn budget is for the program's own failures (exec, exit or
      // crash before ready, not ready in time).
      if (!killed_from_elsewhere(w->exit)) record_start_failure_locked(why);
    }
    finish_locked(lock, w);
    return;
  }
  w->state = Worker::State::idle;
  notify_all_threads();
  if (!room_waiters_.empty()) {  // (With max_queue 0, a ready worker is room.)
    lock.unlock();
    complete_room_waiters();
    lock.lock();
  }

  for (;;) {
    const auto woken = [&] {
      // A task reserved by run(): wait until it is posted (or refused).
      if (w->handed) return true;
      if (w->running) return false;
      return phase_ == Phase::stopping || w->reaped() || w->killed() ||
             (w->state == Worker::State::idle && !queue_.empty() && busy_count_locked() < options_.size);
    };
    if (options_.idle_timeout) {
      // Idle too long while more than `size` workers are up: this one goes.
      bool idle_exit = false;
      while (!woken()) {
        if (changed_.wait_until(lock, Clock::now() + *options_.idle_timeout, woken)) break;
        // (Not a worker run() has reserved and is posting a task to: it
        // is busy, and its task would be lost with it.)
        if (!w->running && alive_count_locked() > options_.size) {
          standby_ = Standby::shrunk;
          ++stats_.idle_exits;
          idle_exit = true;
          break;
        }
      }
      if (idle_exit) break;
    } else {
      changed_.wait(lock, woken);
    }
    // (A handed-over task goes on even now: its outcome, a kill or a
    // death, is reported below.)
    if (!w->handed && (phase_ == Phase::stopping || w->reaped() || w->killed())) break;
    std::shared_ptr<Entry> entry;
    std::optional<std::exception_ptr> refused;
    std::uint32_t seq = 0;
    if (w->handed) {
      // run() took this worker and posted the task itself.
      entry = std::move(w->handed);
      refused = std::exchange(w->refused, std::nullopt);
      seq = w->posted;
      lock.unlock();
    } else {
      // Tasks whose token was cancelled are dropped, not started (their
      // futures failed inside cancel(); its hook may not have reached
      // them yet while it notifies others).
      // Their futures are failed here too (with nothing held), in case
      // the hook has not reached them: a job let go of unfailed would
      // break its promise.
      std::vector<std::shared_ptr<PoolJob>> dropped;
      std::vector<std::shared_ptr<CompleterCore<StopOutcome>>> settled;
      while (!queue_.empty() && queue_.front()->job->token.is_cancelled()) {
        dropped.push_back(queue_.front()->job);
        if (auto s = drop_queued_locked(queue_.front())) settled.push_back(std::move(s));
      }
      const auto finish_dropped = [&] {
        for (const auto& job : dropped) job->fail(job->token.exception());
        for (const auto& s : settled) s->complete(StopOutcome::none);
        dropped.clear();
        settled.clear();
      };
      if (queue_.empty()) {
        const bool room = !room_waiters_.empty();
        notify_all_threads();  // (The spawner lets go of the dropped jobs.)
        lock.unlock();
        finish_dropped();
        if (room) complete_room_waiters();
        lock.lock();
        continue;
      }
      entry = queue_.front();
      queue_.pop_front();
      const bool room = !room_waiters_.empty();
      reserve_locked(*w, entry);
      seq = w->posted;
      lock.unlock();
      finish_dropped();
      if (room) complete_room_waiters();
      refused = post(*w, *entry, seq);
      if (refused) {
        lock.lock();
        --w->posted;  // never reached the worker
        lock.unlock();
      }
    }
    std::uint32_t r = seq;
    if (!refused) {
      // (A stop whose grace ran out: the kill changes the word.)
      while ((r = wait_answer(*w, seq - 1)) == seq - 1) grace_over(w, seq);
    }
    Conclusion c;
    if (refused || !entry->claimed.exchange(true, std::memory_order_acq_rel)) {
      c = conclude(w, *entry, r, std::move(refused), false);
    } else {
      // A thread blocked in the future's get() took the answer.
      lock.lock();
      changed_.wait(lock, [&] { return entry->state == Entry::State::done; });
      c = entry->conclusion;
      lock.unlock();
    }

    lock.lock();
    // (A task handed over by run() may have been concluded by a waiter
    // before this driver took it up: the drain's check runs here too.)
    drained_if_idle_locked();
    if ((!c.answered && !c.refused) || c.retire) break;
  }
  finish_locked(lock, w);
}

// Results up to this size are copied under the pool's lock (see conclude).
constexpr std::uint64_t kCopyUnderLockBytes = 4096;

Conclusion PoolImpl::conclude(const std::shared_ptr<Worker>& w, Entry& entry, std::uint32_t r,
                    std::optional<std::exception_ptr> refused, bool helping) {
  const auto finished = Clock::now();
  const std::uint32_t seq = entry.seq;
  PoolSlot* slot = w->memory->slot;
  // Read the outcome while nothing else may write it: only when the
  // worker answered this task and was not killed meanwhile.
  std::unique_lock lock(mutex_);
  bool answered = !refused && r == seq && !w->killed();
  std::string payload;
  PoolSlot::Outcome outcome = PoolSlot::Outcome::none;
  if (answered) {
    outcome = static_cast<PoolSlot::Outcome>(slot->outcome.load(std::memory_order_acquire));
    const std::uint64_t bytes = slot->payload_bytes.load(std::memory_order_acquire);
    if (outcome == PoolSlot::Outcome::value || outcome == PoolSlot::Outcome::exception) {
      if (bytes > w->memory->result_capacity || bytes > std::max<std::size_t>(options_.max_result_bytes, 65536)) {
        outcome = PoolSlot::Outcome::none;  // a size the worker could not have written
      } else {
        // A large result is copied with the pool's lock free (it may be
        // 256 MiB): the worker is still busy, so nothing hands it a task
        // meanwhile, and it writes nothing until it gets one. A small one
        // is copied here: one turn of the lock fewer per tiny task.
        if (bytes <= kCopyUnderLockBytes) {
          payload.assign(w->memory->result(), bytes);
        } else {
          lock.unlock();
          payload.assign(w->memory->result(), bytes);
          lock.lock();
          // Killed meanwhile (a cancel that came as it answered): the
          // cancel counted it, and its future has the token's exception.
          if (w->killed()) answered = false;
        }
      }
    } else if (outcome == PoolSlot::Outcome::too_large) {
      payload = std::to_string(bytes);
    }
  }
  // Asked to stop (a cancel with a grace): what it does now is the stop,
  // not a task's outcome nor a crash.
  const bool stopping = w->state == Worker::State::stopping;
  const bool died = !refused && !answered && !w->killed() && !stopping;
  w->grace_deadline_ns.store(0, std::memory_order_relaxed);
  w->running.reset();
  entry.worker.reset();  // (cancel() and help() leave it alone from here; it is done below)
  // The job holds the future's core, whose cancellation hook holds the
  // entry: the entry lets go of the job once done, breaking the cycle.
  const std::shared_ptr<PoolJob> job = std::move(entry.job);
  // Its progress, read before the worker can take another task.
  std::function<void()> last_progress_report;
  if (job->progress) last_progress_report = job->progress->detach();
  // Decided before the worker is idle again: an idle worker may be
  // handed a task by run() at any moment.
  Conclusion c;
  c.answered = answered;
  c.refused = refused.has_value();
  if (answered && stopping) {
    // Returned within the grace: the worker serves again.
    ++stats_.tasks_stopped;
    ++w->tasks;
    c.retire = recycle_due_locked(*w) || job->cpu_time_limit.has_value();
    if (c.retire) ++stats_.recycles;
  } else if (!answered && !refused && stopping && !w->killed()) {
    ++stats_.tasks_stopped;  // it exited within the grace (SIGTERM, say): replaced
  } else if (answered) {
    ++stats_.tasks_run;
    ++w->tasks;
    run_time_.add(us_since(entry.taken, finished));
    // (A task with a CPU limit lowered the worker's hard RLIMIT_CPU, which
    // cannot be raised again: the worker is replaced.)
    c.retire = recycle_due_locked(*w) || job->cpu_time_limit.has_value();
    if (c.retire) ++stats_.recycles;
  }
  // How a cancel stopped the task, for settled().
  StopOutcome how = w->stop;
  // Stopped by a cancel or shutdown(): its future failed then, at once.
  const bool failed_already = how != StopOutcome::none;
  if (how == StopOutcome::none && w->killed()) how = StopOutcome::killed;  // (the pool's end)
  if ((answered || refused) && !c.retire) {
    w->state = Worker::State::idle;
    w->stop = StopOutcome::none;
  }
  const bool room = !room_waiters_.empty();
  if (died) {
    ++stats_.crashes;
    // (A worker that wrote something else than this task's number is
    // broken: it is killed, and its task fails as crashed.)
    if (r != PoolSlot::kDied) kill_locked(*w);
    changed_.wait(lock, [&] { return w->reaped() || w->watch == 0; });
  }
  const ProcessExit exit = w->exit;
  const long long task_cpu_seconds = w->cpu_seconds - w->cpu_seconds_at_post;
  // settled(): now if the worker answered (or never had the task) or is
  // reaped already; otherwise when the reaper reaps it.
  std::shared_ptr<CompleterCore<StopOutcome>> settled;
  if (job->settled) {
    if (answered || refused || w->reaped()) {
      settled = std::exchange(job->settled, nullptr);
    } else {
      w->settle_at_reap.emplace_back(std::exchange(job->settled, nullptr), how);
    }
  }
  entry.state = Entry::State::done;
  entry.conclusion = c;
  drained_if_idle_locked();
  lock.unlock();
  if (helping) changed_.notify_all();  // (the driver waits for the conclusion)
  if (room) complete_room_waiters();
  if (last_progress_report) {
    try {
      default_executor().post(std::move(last_progress_report));
    } catch (...) {
      // (Out of memory: the last report is lost, the outcome is not.)
    }
  }

  if (failed_already && !refused) {
    // (Whatever the worker answered is dropped.)
  } else if (refused) {
    job->fail(*refused);
  } else if (answered && job->token.is_cancelled()) {
    // cancel() has begun: no value any more, even if its hook has not
    // reached this task yet.
    job->fail(job->token.exception());
  } else if (answered) {
    deliver(*job, outcome, payload);
  } else if (died) {
    job->fail(worker_end_error(exit, job->cpu_time_limit, task_cpu_seconds, "the worker died during the task"));
  } else {
    // Killed: by a cancellation (the future failed with the token's
    // exception already, and this is ignored) or by the pool's end.
    job->fail(std::make_exception_ptr(CancelledException("the worker pool was destroyed")));
  }
  if (settled) settled->complete(how);
  return c;
}

void PoolImpl::help(Entry& entry, const FutureStateBase& state) noexcept {
  std::shared_ptr<Worker> w;
  std::uint32_t seq = 0;
  {
    std::lock_guard lock(mutex_);
    if (entry.state != Entry::State::posted || !entry.worker) {
      return;
    }
    w = entry.worker;
    seq = entry.seq;
  }
  // Every way a posted task ends changes this word (the answer, or
  // kKilled / kDied written by the pool) and wakes it; the bounded wait
  // only guards that promise.
  const auto& word = w->memory->slot->response;
  std::uint32_t r = 0;
  for (;;) {
    if (state.is_ready()) return;
    r = word.load(std::memory_order_acquire);
    if (r == seq) break;
    if (r != seq - 1) return;  // killed or dead: the driver concludes
    const std::chrono::nanoseconds bound = std::chrono::milliseconds(100);
    futex_wait_kind(word, r, kWaiterKind, &bound);
  }
  if (entry.claimed.exchange(true, std::memory_order_acq_rel)) return;
  // (Only a failed allocation could throw in there: as on a driver's
  // thread, that ends the process rather than leave a task unconcluded.)
  (void)conclude(w, entry, r, std::nullopt, true);
}

void PoolImpl::reserve_locked(Worker& w, const std::shared_ptr<Entry>& entry) {
  entry->state = Entry::State::reserved;
  entry->worker = w.shared_from_this();
  w.state = Worker::State::busy;
  w.running = entry;
  ++w.posted;
  entry->seq = w.posted;
  entry->taken = Clock::now();
  queue_wait_.add(us_since(entry->queued_at, entry->taken));
}

std::optional<std::exception_ptr> PoolImpl::post(Worker& w, Entry& entry, std::uint32_t seq) {
  PoolSlot* slot = w.memory->slot;
  try {
    const std::size_t bytes = entry.job->encode_args(w.memory->args(), w.memory->args_capacity);
    if (bytes > w.memory->args_capacity) {
      throw std::length_error("WorkerPool: the task's arguments take " + std::to_string(bytes) +
                              " bytes; PoolOptions::max_argument_bytes is " +
                              std::to_string(w.memory->args_capacity));
    }
    if (entry.job->task_name.size() > PoolSlot::kMaxTaskName) {
      throw std::invalid_argument("WorkerPool: task name longer than " + std::to_string(PoolSlot::kMaxTaskName) +
                                  " bytes");
    }
    slot->task_name_size = static_cast<std::uint32_t>(entry.job->task_name.size());
    std::memcpy(slot->task_name, entry.job->task_name.data(), entry.job->task_name.size());
    slot->args_bytes = bytes;
    slot->max_result_bytes = options_.max_result_bytes;
    slot->cpu_limit_seconds = entry.job->cpu_time_limit ? static_cast<std::uint64_t>(entry.job->cpu_time_limit->count()) : 0;
    // (The kernel's count, for telling the limit's SIGKILL from others.)
    if (entry.job->cpu_time_limit) w.cpu_seconds_at_post = cpu_seconds_used(w.pid);
  } catch (...) {
    return std::current_exception();
  }
  // The last moment the task can still be kept from starting: a token is
  // marked cancelled before its callbacks run, so a cancel() still busy
  // notifying other tasks (or one that came while the arguments were
  // encoded) is seen here, and the worker never sees the task. Under the
  // pool's lock, as cancel() decides under it: a cancel that finds the
  // task not posted leaves its worker alive, as this refuses it.
  slot->clear_progress();  // (the previous task's; the worker writes none while idle)
  {
    std::lock_guard lock(mutex_);
    if (entry.job->token.is_cancelled()) return entry.job->token.exception();
    entry.state = Entry::State::posted;
    if (entry.job->progress) entry.job->progress->attach(w.shared_from_this());
  }
  slot->request.store(seq, std::memory_order_release);
  futex_wake_all(slot->request);
  return std::nullopt;
}

void PoolImpl::deliver(PoolJob& job, PoolSlot::Outcome outcome, const std::string& payload) {
  try {
    switch (outcome) {
      case PoolSlot::Outcome::value:
        job.deliver(payload);
        return;
      case PoolSlot::Outcome::exception:
        job.fail(decode_exception(ResultView{payload.data(), payload.size()}));
        return;
      case PoolSlot::Outcome::too_large:
        job.fail(std::make_exception_ptr(
            ResultTooLarge(static_cast<std::size_t>(std::stoull(payload)), options_.max_result_bytes)));
        return;
      case PoolSlot::Outcome::none:
        break;
    }
    job.fail(std::make_exception_ptr(
        IsolateError("cancellable::WorkerPool", "the worker reported an outcome that cannot be read")));
  } catch (...) {
    job.fail(std::current_exception());
  }
}

bool PoolImpl::recycle_due_locked(Worker& w) {
  if (options_.recycle_after_tasks && w.tasks >= *options_.recycle_after_tasks) return true;
  if (options_.recycle_above_growth_bytes) {
    const std::size_t rss = resident_bytes(w.pid);
    if (!w.baseline_rss) {
      w.baseline_rss = rss;
    } else if (rss > *w.baseline_rss + *options_.recycle_above_growth_bytes) {
      return true;
    }
  }
  return false;
}

void PoolImpl::finish_locked(std::unique_lock<std::mutex>& lock, const std::shared_ptr<Worker>& w) {
  kill_locked(*w);
  w->state = Worker::State::finished;
  if (w->reaped()) erase_locked(w);
  fail_queue_if_degraded_locked(lock);
  auto drained = drain_done_locked();
  notify_all_threads();
  lock.unlock();
  for (const auto& waiter : drained) waiter->complete();
}

}  // namespace cancellable::detail
