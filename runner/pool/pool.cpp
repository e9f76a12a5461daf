// The parent side of the worker pool (see include/cancellable/pool.hpp).
//
// Threads:
//   - the spawner: starts every worker, and so lives as long as the pool
//     (PR_SET_PDEATHSIG fires when the *thread* that started a child ends);
//   - the reaper (runner/process/reaper.hpp, shared with isolates): reaps each
//     worker as it dies and wakes the worker's driver if it was waiting on
//     it;
//   - one driver per worker: waits for the worker to be ready, takes tasks
//     from the queue, hands them over through the worker's shared memory and
//     waits (futex) for the outcome, a kill or a death.
// Every state change happens under mutex_; futures complete, and
// continuations run, on a driver with nothing held.
//
// Why not Boost.Process v2's launcher (1.81): its default launcher forks the
// whole parent before exec and runs Asio's fork hooks in the child
// (boostorg/process#430); its vfork_launcher is broken (#314); and its
// step that closes descriptors leaks the parent's descriptors into the
// child (fixed in 1.85). Workers are started with posix_spawn (glibc's is
// clone(CLONE_VM | CLONE_VFORK) + exec: nothing of the parent is copied,
// and no lock of its threads is inherited), with descriptor 3 the worker's
// memory and every descriptor from 4 up closed in the child
// (posix_spawn_file_actions_addclosefrom_np), so a descriptor of the
// parent's that is not close-on-exec cannot leak in either. Nor is the
// spawned pid held in a boost::process::v2::process: its 1.81 destructor
// SIGKILLs and waits on whatever process has the pid by then, and its
// async_wait reaps before the worker's group can be killed. The worker is
// its pidfd, watched and reaped by the reaper isolates use too.

#include "cancellable/pool.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <list>
#include <map>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "cancellable/exceptions.hpp"
#include "runner/process/keeper.hpp"
#include "runner/process/reaper.hpp"
#include "runner/process/worker_process.hpp"
#include "worker/protocol/keeper_messages.hpp"
#include "worker/protocol/futex.hpp"
#include "worker/protocol/pool_slot.hpp"
#include "worker/protocol/result_channel.hpp"

extern char** environ;

namespace cancellable {

PoolQueueFull::PoolQueueFull(std::size_t max_queue)
    : PoolError("WorkerPool: the queue is full (" + std::to_string(max_queue) +
                         " tasks wait already; PoolOptions::max_queue, or wait on room())") {}

namespace detail {
namespace {

using Clock = std::chrono::steady_clock;

// The worker's shared memory, as the parent holds it.
struct SlotMemory {
  SlotMemory(std::uint64_t args_capacity, std::uint64_t result_capacity)
      : args_capacity(args_capacity),
        result_capacity(result_capacity),
        bytes(PoolSlot::total_bytes(args_capacity, result_capacity)) {
    fd = ::memfd_create("cancellable-pool-worker", MFD_CLOEXEC);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "WorkerPool: memfd_create");
    if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
      const int error = errno;
      ::close(fd);
      throw std::system_error(error, std::generic_category(), "WorkerPool: ftruncate of the worker's memory");
    }
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    if (p == MAP_FAILED) {
      const int error = errno;
      ::close(fd);
      throw std::system_error(error, std::generic_category(), "WorkerPool: mmap of the worker's memory");
    }
    // Not inherited by this process's later forks (an isolate's): a forked
    // child has no business with a worker's memory, and would pin it.
    (void)::madvise(p, bytes, MADV_DONTFORK);
    slot = new (p) PoolSlot;
    // The first pages of both areas, mapped in here (not during a task).
    std::memset(args(), 0, std::min<std::uint64_t>(args_capacity, 4096));
    std::memset(const_cast<char*>(result()), 0, std::min<std::uint64_t>(result_capacity, 4096));
    slot->magic = PoolSlot::kMagic;
    slot->version = PoolSlot::kVersion;
    slot->args_capacity = args_capacity;
    slot->result_capacity = result_capacity;
  }
  ~SlotMemory() {
    ::munmap(slot, bytes);
    if (fd >= 0) ::close(fd);
  }
  SlotMemory(const SlotMemory&) = delete;
  SlotMemory& operator=(const SlotMemory&) = delete;

  // The parent's own copies: never read back from the shared header.
  const std::uint64_t args_capacity;
  const std::uint64_t result_capacity;
  const std::size_t bytes;
  int fd = -1;  // closed once the worker has it
  PoolSlot* slot = nullptr;
  char* args() const noexcept { return reinterpret_cast<char*>(slot) + PoolSlot::kHeaderBytes; }
  const char* result() const noexcept { return args() + args_capacity; }
};

struct Entry;

struct Worker : std::enable_shared_from_this<Worker> {
  enum class State { starting, idle, busy, finished };
  ~Worker() { close_pidfd(); }
  void close_pidfd() noexcept {
    if (pidfd >= 0) ::close(pidfd);
    pidfd = -1;
  }
  pid_t pid = 0;
  int pidfd = -1;
  // The reaper's watch (0: none, the reaper could not take it: nothing will
  // reap the worker before stop() does).
  std::uint64_t watch = 0;
  std::unique_ptr<SlotMemory> memory;
  State state = State::starting;
  bool dead = false;     // reaped
  bool killed = false;   // SIGKILL sent by the pool
  bool reaped = false;
  ProcessExit exit;
  std::shared_ptr<Entry> running;  // the task it runs, if any
  std::size_t tasks = 0;
  std::optional<std::size_t> baseline_rss;
  // The last task number posted (kReady: none); changed under the pool's
  // lock, only by whoever holds the worker (its driver, or run() handing a
  // task over).
  std::uint32_t posted = PoolSlot::kReady;
  // A task run() handed over (posted, or refused with the error), until
  // the driver takes it up. (It may have been concluded meanwhile by a
  // thread waiting for its future.)
  std::shared_ptr<Entry> handed;
  std::optional<std::exception_ptr> refused;
  // settled() of tasks killed (or dead) with this worker: completed once it
  // is reaped.
  std::vector<std::shared_ptr<CompleterCore<void>>> settle_at_reap;
};

// Completes the job's settled() (if anyone asked) now.
void settle(PoolJob& job) {
  if (auto settled = std::exchange(job.settled, nullptr)) settled->complete();
}

void settle_all(std::vector<std::shared_ptr<CompleterCore<void>>>& list) {
  for (auto& settled : list) settled->complete();
  list.clear();
}

// How a task's hand-over ended, as its driver needs to know.
struct Conclusion {
  bool answered = false;  // the worker answered (the worker is reusable)
  bool refused = false;   // never posted (the worker is reusable)
  bool retire = false;    // a recycle rule retires the worker
};

// A queued or running task. As the WaitHelper of its future, it lets a
// thread blocked in get() wait on the worker's answer itself.
struct Entry final : WaitHelper, std::enable_shared_from_this<Entry> {
  enum class State { queued, running, done };
  std::shared_ptr<PoolJob> job;
  State state = State::queued;
  std::shared_ptr<Worker> worker;
  Clock::time_point queued_at = Clock::now();
  Clock::time_point taken;
  std::uint32_t seq = 0;  // its task number, once reserved
  std::weak_ptr<PoolImpl> pool;
  // Set once the task is in the worker's memory and posted (under the
  // pool's lock; read by help() without it).
  std::atomic<bool> posted{false};
  // Whoever first sees the worker's answer (the driver, or a helping
  // waiter) claims the conclusion; the other waits for it.
  std::atomic<bool> claimed{false};
  bool concluded = false;  // under the pool's lock
  Conclusion conclusion;

  void help_wait(const FutureStateBase& state) noexcept override;
  // (Nothing to do: every end of a posted task changes the worker's
  // response word and wakes help()'s wait; see kill_locked and reap.)
  void wake(const FutureStateBase&) noexcept override {}
};

std::size_t resident_bytes(pid_t pid) {
  std::ifstream statm("/proc/" + std::to_string(pid) + "/statm");
  std::size_t size = 0, resident = 0;
  if (!(statm >> size >> resident)) return 0;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

// A ring of the last samples, for percentiles.
class Samples {
 public:
  void add(double us) {
    if (values_.size() < kKeep) {
      values_.push_back(us);
    } else {
      values_[next_] = us;
    }
    next_ = (next_ + 1) % kKeep;
  }
  std::pair<double, double> p50_p99() const {
    if (values_.empty()) return {0, 0};
    std::vector<double> sorted = values_;
    std::sort(sorted.begin(), sorted.end());
    const auto rank = [&](double p) {
      const auto i = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
      return sorted[std::min(sorted.size() - 1, i == 0 ? 0 : i - 1)];
    };
    return {rank(0.50), rank(0.99)};
  }

 private:
  static constexpr std::size_t kKeep = 1024;
  std::vector<double> values_;
  std::size_t next_ = 0;
};

double us_since(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::micro>(to - from).count();
}

}  // namespace

class PoolImpl : public std::enable_shared_from_this<PoolImpl> {
 public:
  explicit PoolImpl(PoolOptions options) : options_(std::move(options)) {}

  void start() {
    try {
      ensure_reaper_started();
    } catch (const std::system_error& e) {
      throw WorkerStartFailed(std::string("WorkerPool: ") + e.what());
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
      throw WorkerStartFailed("WorkerPool: the worker program " + options_.worker_program.string() +
                              " could not start: " + why);
    }
  }

  ~PoolImpl() { stop(); }

  std::function<void()> submit(std::shared_ptr<PoolJob> job) {
    auto entry = std::make_shared<Entry>();
    entry->job = std::move(job);
    entry->pool = weak_from_this();
    if (entry->job->state) entry->job->state->set_wait_helper(entry);
    std::shared_ptr<Worker> handed_to;
    std::uint32_t seq = 0;
    bool wake_spawner = false;
    {
      std::lock_guard lock(mutex_);
      if (stopping_) throw PoolDegraded("WorkerPool: the pool is stopping");
      if (!degraded_.empty()) throw PoolDegraded(degraded_);
      // (A task handed straight to a ready worker takes no room in the
      // queue: with max_queue 0, run() succeeds while a worker is free.)
      if (!has_room_locked()) throw PoolQueueFull(options_.max_queue);
      wake_spawner = !standby_wanted_;
      standby_wanted_ = true;  // (if idle workers had shrunk it away)
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
          if (w->state == Worker::State::idle && !w->killed && !w->dead && !w->handed) {
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
    // The worker's driver must know of the hand-over; the spawner only of a
    // queued task (it may start a worker early) or a standby wanted again.
    if (handed_to && !wake_spawner) {
      changed_.notify_all();
    } else {
      notify_all_threads();
    }
    std::weak_ptr<PoolImpl> weak = weak_from_this();
    return [weak, entry] {
      if (auto pool = weak.lock()) pool->cancel(entry);
    };
  }

  // run() would take one more task now: there is room in the queue, or (the
  // queue empty) a worker is ready for a direct hand-over.
  bool has_room_locked() const {
    if (queue_.size() < options_.max_queue) return true;
    if (!queue_.empty() || busy_count_locked() >= options_.size) return false;
    for (const auto& w : workers_) {
      if (w->state == Worker::State::idle && !w->killed && !w->dead && !w->handed) return true;
    }
    return false;
  }

  Future<void> room() {
    auto core = std::make_shared<CompleterCore<void>>(CancellationToken::none(), nullptr);
    {
      std::lock_guard lock(mutex_);
      if (!has_room_locked() && degraded_.empty() && !stopping_) {
        room_waiters_.push_back(core);
        return core->future();
      }
    }
    core->complete();
    return core->future();
  }

  PoolStats stats() const {
    std::lock_guard lock(mutex_);
    PoolStats s = stats_;
    s.queued = queue_.size();
    for (const auto& w : workers_) {
      if (w->state == Worker::State::starting) ++s.starting;
      if (w->state == Worker::State::idle) ++s.idle;
      if (w->state == Worker::State::busy) ++s.busy;
    }
    std::tie(s.queue_wait_p50_us, s.queue_wait_p99_us) = queue_wait_.p50_p99();
    std::tie(s.run_time_p50_us, s.run_time_p99_us) = run_time_.p50_p99();
    return s;
  }

  void stop() noexcept {
    std::vector<std::shared_ptr<PoolJob>> abandoned;
    {
      std::lock_guard lock(mutex_);
      if (stopped_) return;
      stopped_ = true;
      stopping_ = true;
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
      std::vector<std::shared_ptr<CompleterCore<void>>> settled;
      for (const auto& w : workers_) {
        (void)reap_worker(w->pidfd, w->pid, w->killed);
        w->close_pidfd();
        for (auto& s : w->settle_at_reap) settled.push_back(std::move(s));
        w->settle_at_reap.clear();
      }
      workers_.clear();
      lock.unlock();
      settle_all(settled);
    }
  }

 private:
  std::size_t target_locked() const { return options_.size + (standby_wanted_ ? options_.standby : 0); }
  std::size_t ready_count_locked() const {
    std::size_t n = 0;
    for (const auto& w : workers_) n += w->state == Worker::State::idle || w->state == Worker::State::busy;
    return n;
  }
  // Workers that are or will be of use. A killed one counts until it is
  // reaped: its replacement starts at the reap, which follows the kill by a
  // few hundred microseconds. (Started at the kill, the spawn took the CPU
  // from the threads the cancel wakes: the cancel's p99 rose 3.3x.)
  std::size_t alive_count_locked() const {
    std::size_t n = 0;
    for (const auto& w : workers_) n += w->state != Worker::State::finished && !w->reaped;
    return n;
  }
  std::size_t idle_count_locked() const {
    std::size_t n = 0;
    for (const auto& w : workers_) n += w->state == Worker::State::idle;
    return n;
  }
  // Slots taken: a worker being killed gives its slot back at once (to the
  // standby), before its driver has even woken up.
  std::size_t busy_count_locked() const {
    std::size_t n = 0;
    for (const auto& w : workers_) n += w->state == Worker::State::busy && !w->killed;
    return n;
  }

  // SIGKILLs the worker (through its pidfd: never a stranger). Its process
  // group follows when the reaper reaps it (reap()), before anything waits
  // on its end. Its driver, if it waits on the worker, learns of the kill
  // then too: neither the group's kill nor the driver's work stands between
  // a cancel and the thread it wakes, or the next task (which the standby
  // takes at once).
  void kill_locked(Worker& w) {
    if (w.dead) return;
    if (!w.killed) {
      w.killed = true;
      // The worker and what its task started, at once (also when the host
      // ignores SIGCHLD, and no zombie would be left to pin the group id
      // for the reap's group kill).
      kill_worker_and_group(w.pidfd, w.pid);
    }
    if (w.state == Worker::State::busy || w.state == Worker::State::starting) {
      // Nothing but the pool writes this word from now on. A thread blocked
      // in the task's get() (see help()) wakes now; without a reaper, the
      // driver too (nothing else would wake it).
      w.memory->slot->response.store(PoolSlot::kKilled, std::memory_order_release);
      futex_wake_kinds(w.memory->slot->response, w.watch == 0 ? FUTEX_BITSET_MATCH_ANY : kWaiterKind);
    }
  }

  void cancel(const std::shared_ptr<Entry>& entry) {
    bool room = false;
    bool wake = true;
    std::shared_ptr<CompleterCore<void>> settled;
    {
      std::lock_guard lock(mutex_);
      if (entry->state == Entry::State::queued) {
        // Never started: the future has failed already.
        settled = drop_queued_locked(entry);
        room = !room_waiters_.empty();
      } else if (entry->state == Entry::State::running && entry->worker && entry->posted.load() &&
                 !entry->worker->dead && !entry->worker->killed) {
        // (Not posted yet: post() sees the cancelled token and never posts
        // it, and the worker lives on. Dead already: the task is counted as
        // crashed when concluded; killed, it is not: each task counts once.)
        ++stats_.tasks_killed;
        kill_locked(*entry->worker);
        // The slot is free now: only a queued task needs to know at once
        // (the standby's replacement starts at the reap).
        wake = !queue_.empty();
      }
    }
    if (wake) notify_all_threads();
    if (settled) settled->complete();
    if (room) complete_room_waiters();
  }

  // Takes a task that never started out of the queue (its future failed
  // already); returns its settled() completer, to complete unlocked.
  std::shared_ptr<CompleterCore<void>> drop_queued_locked(std::shared_ptr<Entry> entry) {
    const auto at = std::find(queue_.begin(), queue_.end(), entry);
    if (at != queue_.end()) queue_.erase(at);
    entry->state = Entry::State::done;
    auto settled = std::exchange(entry->job->settled, nullptr);
    // Not destroyed here: this may run inside the cancellation hook of the
    // future's core, which the job owns. The spawner lets go of it.
    dropped_jobs_.push_back(std::move(entry->job));
    return settled;
  }

  // Room waiters complete whenever run() would take a task, or would
  // answer at once (a degraded pool: PoolDegraded).
  void complete_room_waiters() {
    std::vector<std::shared_ptr<CompleterCore<void>>> waiters;
    {
      std::lock_guard lock(mutex_);
      if (!has_room_locked() && degraded_.empty()) return;
      waiters.swap(room_waiters_);
    }
    for (const auto& w : waiters) w->complete();
  }

  void fail_room_waiters() {
    std::vector<std::shared_ptr<CompleterCore<void>>> waiters;
    {
      std::lock_guard lock(mutex_);
      waiters.swap(room_waiters_);
    }
    for (const auto& w : waiters) {
      w->complete_error(std::make_exception_ptr(CancelledException("the worker pool was destroyed")));
    }
  }

  static bool killed_from_elsewhere(const ProcessExit& exit) {
    if (exit.kind != ProcessExit::Kind::killed) return false;
    switch (exit.signal) {
      case SIGSEGV: case SIGBUS: case SIGILL: case SIGFPE: case SIGABRT: case SIGSYS: case SIGTRAP:
        return false;  // (The program's own crash.)
      default:
        return true;
    }
  }

  void record_start_failure_locked(const std::string& why) {
    ++stats_.start_failures;
    ++start_failures_;
    last_start_failure_ = why;
    const auto now = Clock::now();
    recent_failures_.push_back(now);
    while (!recent_failures_.empty() && now - recent_failures_.front() > options_.respawn_period) {
      recent_failures_.pop_front();
    }
    if (recent_failures_.size() >= std::max<std::size_t>(options_.respawn_budget, 1) && degraded_.empty()) {
      degraded_at_ = now;
      degraded_ = "WorkerPool: stopped starting workers after " + std::to_string(recent_failures_.size()) +
                  " failed to start within " + std::to_string(options_.respawn_period.count()) +
                  " ms; the last: " + why;
    }
  }

  // --- the spawner -------------------------------------------------------------

  void spawner_loop() {
    std::unique_lock lock(mutex_);
    for (;;) {
      // Degraded: after respawn_period, the program gets another budget
      // (whatever broke it may have been fixed: a file restored, memory
      // freed). Until then run() answers PoolDegraded.
      if (!degraded_.empty() && !stopping_ && dropped_jobs_.empty()) {
        const auto retry_at = degraded_at_ + options_.respawn_period;
        if (Clock::now() < retry_at) {
          spawner_wake_.wait_until(lock, retry_at);
          continue;
        }
        degraded_.clear();
        recent_failures_.clear();
      }
      // Transient spawn errors (EAGAIN, ENOMEM): a growing pause, not the
      // budget.
      if (!stopping_ && dropped_jobs_.empty() && Clock::now() < backoff_until_) {
        spawner_wake_.wait_until(lock, backoff_until_);
        continue;
      }
      spawner_wake_.wait(lock, [&] {
        return stopping_ || !dropped_jobs_.empty() || !degraded_.empty() || alive_count_locked() < target_locked();
      });
      if (!degraded_.empty() && !stopping_ && dropped_jobs_.empty()) continue;
      if (!dropped_jobs_.empty()) {
        auto dropped = std::move(dropped_jobs_);
        dropped_jobs_.clear();
        lock.unlock();
        dropped.clear();  // (their futures have failed already)
        lock.lock();
        continue;
      }
      if (stopping_) return;
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

  // Fails every queued task once the pool has given up starting workers and
  // none is left to run them. Called with lock held; unlocks around fail().
  void fail_queue_if_degraded_locked(std::unique_lock<std::mutex>& lock) {
    if (degraded_.empty() || alive_count_locked() > 0) return;
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

  std::shared_ptr<Worker> spawn_worker() {
    auto worker = std::make_shared<Worker>();
    worker->memory = std::make_unique<SlotMemory>(options_.max_argument_bytes,
                                                  std::max<std::size_t>(options_.max_result_bytes, 65536));
    std::vector<std::string> args = {options_.worker_program.string(), kPoolWorkerFlag, std::to_string(::getpid())};
    if (options_.memory_limit_bytes) args.push_back(std::to_string(*options_.memory_limit_bytes));
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);

    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    ::posix_spawn_file_actions_init(&actions);
    ::posix_spawnattr_init(&attributes);
    // Descriptor 3 is the worker's memory (dup2 clears close-on-exec on the
    // copy); every descriptor from 4 up is closed in the child.
    ::posix_spawn_file_actions_adddup2(&actions, worker->memory->fd, kPoolSlotDescriptor);
    ::posix_spawn_file_actions_addclosefrom_np(&actions, kPoolSlotDescriptor + 1);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    ::posix_spawnattr_setsigmask(&attributes, &none);
    ::posix_spawnattr_setsigdefault(&attributes, &all);
    ::posix_spawnattr_setpgroup(&attributes, 0);  // a process group of its own
    ::posix_spawnattr_setflags(&attributes,
                               POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t pid = 0;
    const int error = ::posix_spawn(&pid, argv[0], &actions, &attributes, argv.data(), environ);
    ::posix_spawn_file_actions_destroy(&actions);
    ::posix_spawnattr_destroy(&attributes);
    if (error != 0) {
      throw std::system_error(error, std::generic_category(), "posix_spawn");
    }
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

  // Has the reaper watch a new worker. If it cannot, the worker is killed
  // (its driver then ends it) and stop() reaps it.
  void watch_locked(const std::shared_ptr<Worker>& worker) {
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

  // --- the reap ----------------------------------------------------------------

  // The reaper's thread: the worker has exited. What its task started in
  // its group dies with it (see reap_worker). Under the lock, which
  // kill_locked takes: no kill of its group can come after the reap has
  // freed the group id. (The process has exited: the reap does not wait.)
  void reap(const std::shared_ptr<Worker>& worker) {
    std::unique_lock lock(mutex_);
    if (worker->reaped) return;
    const ProcessExit exit = reap_worker(worker->pidfd, worker->pid, worker->killed).exit;
    worker->close_pidfd();  // (now: the reaper's thread may hold the worker a little longer)
    worker->reaped = true;
    auto settled = std::move(worker->settle_at_reap);
    worker->settle_at_reap.clear();
    // (The task it ran, if any, is settled by its conclusion, which follows
    // at once: after the statistics count it.)
    worker->dead = true;
    worker->exit = exit;
    const bool driver_waits = worker->state == Worker::State::busy || worker->state == Worker::State::starting;
    if (driver_waits) {
      // Its driver waits on the worker's word (the worker is gone: its
      // memory is written by nobody else now).
      std::uint32_t expected = worker->memory->slot->response.load(std::memory_order_acquire);
      if (expected != PoolSlot::kKilled) {
        worker->memory->slot->response.store(PoolSlot::kDied, std::memory_order_release);
      }
    }
    if (worker->state == Worker::State::finished) erase_locked(worker);
    lock.unlock();
    // Whoever waits for the end of the worker's task first; then its
    // driver, whose work can wait.
    settle_all(settled);
    if (driver_waits) futex_wake_all(worker->memory->slot->response);
    notify_all_threads();
  }

  // Drops a finished, reaped worker.
  void erase_locked(const std::shared_ptr<Worker>& worker) {
    workers_.erase(std::remove(workers_.begin(), workers_.end(), worker), workers_.end());
  }

  // --- a driver ----------------------------------------------------------------

  // Waits until the worker's response word leaves `from`, or the deadline.
  std::uint32_t wait_response(const Worker& w, std::uint32_t from, std::optional<Clock::time_point> deadline) {
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

  void driver_loop(std::shared_ptr<Worker> worker) {
    ::pthread_setname_np(::pthread_self(), "cancel-driver");
    drive(worker);
    // The last thing this thread does with the pool: its reference to the
    // worker goes first, then the count stop() waits on.
    worker.reset();
    std::lock_guard lock(mutex_);
    --live_drivers_;
    notify_all_threads();
  }

  void drive(const std::shared_ptr<Worker>& w) {
    const std::uint32_t ready = wait_response(*w, PoolSlot::kStarting, Clock::now() + options_.start_timeout);
    std::unique_lock lock(mutex_);
    if (ready != PoolSlot::kReady || w->dead || w->killed) {
      if (!stopping_) {
        std::string why;
        if (ready == PoolSlot::kStarting) {
          why = "it was not ready within " + std::to_string(options_.start_timeout.count()) +
                " ms (is it a worker program? It must call cancellable::worker_main first thing in main)";
        } else {
          // The reaper has the exit status once it reaped the worker.
          changed_.wait(lock, [&] { return w->reaped || w->watch == 0; });
          why = "it " + w->exit.str() +
                " before it was ready (is it a worker program? It must call cancellable::worker_main first "
                "thing in main)";
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
        return stopping_ || w->dead || w->killed ||
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
            standby_wanted_ = false;
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
      if (!w->handed && (stopping_ || w->dead || w->killed)) break;
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
        std::vector<std::shared_ptr<CompleterCore<void>>> settled;
        while (!queue_.empty() && queue_.front()->job->token.is_cancelled()) {
          dropped.push_back(queue_.front()->job);
          if (auto s = drop_queued_locked(queue_.front())) settled.push_back(std::move(s));
        }
        const auto finish_dropped = [&] {
          for (const auto& job : dropped) job->fail(job->token.exception());
          for (const auto& s : settled) s->complete();
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
      if (!refused) r = wait_response(*w, seq - 1, std::nullopt);
      Conclusion c;
      if (refused || !entry->claimed.exchange(true, std::memory_order_acq_rel)) {
        c = conclude(w, *entry, r, std::move(refused), false);
      } else {
        // A thread blocked in the future's get() took the answer.
        lock.lock();
        changed_.wait(lock, [&] { return entry->concluded; });
        c = entry->conclusion;
        lock.unlock();
      }

      lock.lock();
      if ((!c.answered && !c.refused) || c.retire) break;
    }
    finish_locked(lock, w);
  }

  // Concludes task entry.seq on worker w, whose response word read r (or
  // which refused it): reads the outcome, updates the worker and the
  // statistics, and completes the future (with nothing held). Called once
  // per task, by whoever claimed it: its driver, or (helping) a thread
  // blocked in the future's get().
  Conclusion conclude(const std::shared_ptr<Worker>& w, Entry& entry, std::uint32_t r,
                      std::optional<std::exception_ptr> refused, bool helping) {
    const auto finished = Clock::now();
    const std::uint32_t seq = entry.seq;
    PoolSlot* slot = w->memory->slot;
    // Read the outcome while nothing else may write it: only when the
    // worker answered this task and was not killed meanwhile.
    std::unique_lock lock(mutex_);
    bool answered = !refused && r == seq && !w->killed;
    std::string payload;
    PoolSlot::Outcome outcome = PoolSlot::Outcome::none;
    if (answered) {
      outcome = static_cast<PoolSlot::Outcome>(slot->outcome);
      const std::uint64_t bytes = slot->payload_bytes;
      if (outcome == PoolSlot::Outcome::value || outcome == PoolSlot::Outcome::exception) {
        if (bytes > w->memory->result_capacity || bytes > std::max<std::size_t>(options_.max_result_bytes, 65536)) {
          outcome = PoolSlot::Outcome::none;  // a size the worker could not have written
        } else {
          // Copied with the pool's lock free (a result may be 256 MiB): the
          // worker is still busy, so nothing hands it a task meanwhile, and
          // it writes nothing until it gets one.
          lock.unlock();
          payload.assign(w->memory->result(), bytes);
          lock.lock();
          // Killed meanwhile (a cancel that came as it answered): the
          // cancel counted it, and its future has the token's exception.
          if (w->killed) answered = false;
        }
      } else if (outcome == PoolSlot::Outcome::too_large) {
        payload = std::to_string(bytes);
      }
    }
    const bool died = !refused && !answered && !w->killed;
    w->running.reset();
    entry.state = Entry::State::done;
    entry.worker.reset();
    // The job holds the future's core, whose cancellation hook holds the
    // entry: the entry lets go of the job once done, breaking the cycle.
    const std::shared_ptr<PoolJob> job = std::move(entry.job);
    // Decided before the worker is idle again: an idle worker may be
    // handed a task by run() at any moment.
    Conclusion c;
    c.answered = answered;
    c.refused = refused.has_value();
    if (answered) {
      ++stats_.tasks_run;
      ++w->tasks;
      run_time_.add(us_since(entry.taken, finished));
      c.retire = recycle_due_locked(*w);
      if (c.retire) ++stats_.recycles;
    }
    if ((answered || refused) && !c.retire) w->state = Worker::State::idle;
    const bool room = !room_waiters_.empty();
    if (died) {
      ++stats_.crashes;
      // (A worker that wrote something else than this task's number is
      // broken: it is killed, and its task fails as crashed.)
      if (r != PoolSlot::kDied) kill_locked(*w);
      changed_.wait(lock, [&] { return w->reaped || w->watch == 0; });
    }
    const ProcessExit exit = w->exit;
    // settled(): now if the worker answered (or never had the task) or is
    // reaped already; otherwise when the reaper reaps it.
    std::shared_ptr<CompleterCore<void>> settled;
    if (job->settled) {
      if (answered || refused || w->reaped) {
        settled = std::exchange(job->settled, nullptr);
      } else {
        w->settle_at_reap.push_back(std::exchange(job->settled, nullptr));
      }
    }
    entry.concluded = true;
    entry.conclusion = c;
    lock.unlock();
    if (helping) changed_.notify_all();  // (the driver waits for the conclusion)
    if (room) complete_room_waiters();

    if (refused) {
      job->fail(*refused);
    } else if (answered && job->token.is_cancelled()) {
      // cancel() has begun: no value any more, even if its hook has not
      // reached this task yet.
      job->fail(job->token.exception());
    } else if (answered) {
      deliver(*job, outcome, payload);
    } else if (died && job->cpu_time_limit && exit.kind == ProcessExit::Kind::exited &&
               exit.code == kPoolExitCpuLimit) {
      job->fail(std::make_exception_ptr(CpuTimeLimitExceeded(*job->cpu_time_limit)));
    } else if (died) {
      job->fail(std::make_exception_ptr(IsolateCrashed(exit, "the worker died during the task")));
    } else {
      // Killed: by a cancellation (the future failed with the token's
      // exception already, and this is ignored) or by the pool's end.
      job->fail(std::make_exception_ptr(CancelledException("the worker pool was destroyed")));
    }
    if (settled) settled->complete();
    return c;
  }

 public:
  // A thread about to block on entry's future (see Entry): while the task
  // is posted to a worker, waits on the worker's response word itself and,
  // if it sees the answer first, concludes the task on this thread. Returns
  // early (the caller then waits as usual) in every other case.
  void help(Entry& entry, const FutureStateBase& state) noexcept {
    std::shared_ptr<Worker> w;
    std::uint32_t seq = 0;
    {
      std::lock_guard lock(mutex_);
      if (entry.state != Entry::State::running || !entry.worker || !entry.posted.load(std::memory_order_acquire)) {
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

 private:

  // Gives entry to the idle worker w (under the lock).
  void reserve_locked(Worker& w, const std::shared_ptr<Entry>& entry) {
    entry->state = Entry::State::running;
    entry->worker = w.shared_from_this();
    w.state = Worker::State::busy;
    w.running = entry;
    ++w.posted;
    entry->seq = w.posted;
    entry->taken = Clock::now();
    queue_wait_.add(us_since(entry->queued_at, entry->taken));
  }

  // Writes the task into the worker's memory and posts it as task seq (no
  // lock held: the arguments' encoding is the caller's code). The error
  // that kept it from being posted, if any.
  std::optional<std::exception_ptr> post(Worker& w, Entry& entry, std::uint32_t seq) {
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
    } catch (...) {
      return std::current_exception();
    }
    // The last moment the task can still be kept from starting: a token is
    // marked cancelled before its callbacks run, so a cancel() still busy
    // notifying other tasks (or one that came while the arguments were
    // encoded) is seen here, and the worker never sees the task. Under the
    // pool's lock, as cancel() decides under it: a cancel that finds the
    // task not posted leaves its worker alive, as this refuses it.
    {
      std::lock_guard lock(mutex_);
      if (entry.job->token.is_cancelled()) return entry.job->token.exception();
      entry.posted.store(true, std::memory_order_release);
    }
    slot->request.store(seq, std::memory_order_release);
    futex_wake_all(slot->request);
    return std::nullopt;
  }

  void deliver(PoolJob& job, PoolSlot::Outcome outcome, const std::string& payload) {
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

  bool recycle_due_locked(Worker& w) {
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

  // The driver's end: kills the worker if it still runs, leaves it to the
  // reaper to reap, and lets the spawner replace it.
  void finish_locked(std::unique_lock<std::mutex>& lock, const std::shared_ptr<Worker>& w) {
    kill_locked(*w);
    w->state = Worker::State::finished;
    if (w->reaped) erase_locked(w);
    fail_queue_if_degraded_locked(lock);
    notify_all_threads();
    lock.unlock();
  }

  // The two kinds of waiter on a worker's response word (futex bitsets):
  // its driver, and a thread blocked in the task's get().
  static constexpr std::uint32_t kDriverKind = 1;
  static constexpr std::uint32_t kWaiterKind = 2;

  const PoolOptions options_;

  mutable std::mutex mutex_;
  // Every thread of the pool but the spawner waits on changed_; the spawner
  // on spawner_wake_ (notify_all_threads() wakes both), so that handing a
  // task to a worker wakes its driver and not the spawner.
  std::condition_variable changed_;
  std::condition_variable spawner_wake_;
  void notify_all_threads() {
    changed_.notify_all();
    spawner_wake_.notify_all();
  }
  std::deque<std::shared_ptr<Entry>> queue_;
  std::vector<std::shared_ptr<Worker>> workers_;
  std::vector<std::shared_ptr<CompleterCore<void>>> room_waiters_;
  // Jobs cancelled while queued, released by the spawner thread.
  std::vector<std::shared_ptr<PoolJob>> dropped_jobs_;
  std::size_t live_drivers_ = 0;
  bool stopping_ = false;
  bool stopped_ = false;
  std::size_t start_failures_ = 0;
  std::string last_start_failure_;
  std::deque<Clock::time_point> recent_failures_;
  std::string degraded_;
  Clock::time_point degraded_at_{};
  // After a transient spawn error: no spawn before backoff_until_.
  std::chrono::milliseconds backoff_{0};
  Clock::time_point backoff_until_{};
  // Whether the standby is kept up (idle_timeout lets it shrink away).
  bool standby_wanted_ = true;
  PoolStats stats_;
  Samples queue_wait_;
  Samples run_time_;

  std::thread spawner_;
};

void Entry::help_wait(const FutureStateBase& state) noexcept {
  auto keep = shared_from_this();
  if (auto p = pool.lock()) p->help(*this, state);
}

std::shared_ptr<PoolImpl> make_pool(PoolOptions options) {
  if (std::getenv(kPoolWorkerEnvironment) != nullptr) {
    throw std::logic_error("WorkerPool: a pool cannot be created inside a pool worker");
  }
  if (options.worker_program.empty()) throw std::invalid_argument("WorkerPool: PoolOptions::worker_program is empty");
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
Future<void> pool_room(const std::shared_ptr<PoolImpl>& pool) { return pool->room(); }
void stop_pool(PoolImpl& pool) noexcept { pool.stop(); }

}  // namespace detail

WorkerPool::WorkerPool(PoolOptions options) : impl_(detail::make_pool(std::move(options))) {}
WorkerPool::~WorkerPool() { detail::stop_pool(*impl_); }
Future<void> WorkerPool::room() const { return detail::pool_room(impl_); }
PoolStats WorkerPool::stats() const { return detail::pool_stats(*impl_); }

}  // namespace cancellable
