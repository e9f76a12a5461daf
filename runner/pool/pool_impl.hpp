// The parent side of the worker pool (see include/cancellable/pool.hpp): its
// types and the one class behind WorkerPool. Its functions live by
// responsibility: pool.cpp (the facade: run, cancel, room, stop),
// spawner.cpp (starting workers and reaping them), driver.cpp (handing
// tasks over and concluding them), pool_stats.cpp (statistics);
// slot_memory.hpp is the worker's shared memory.
//
// Every lifecycle is an enum with its transitions written beside it:
// Worker::State (its role) and Worker::Process (its process), Entry::State
// (a task's), PoolImpl::Phase (the pool's) and PoolImpl::Standby.
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
// Every state change happens under mutex_; futures complete with nothing
// held, on a driver, on a thread blocked in get(), or on the reaper (whose
// continuations go to the default executor).
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
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cancellable/isolate_errors.hpp"
#include "cancellable/pool.hpp"
#include "cancellable/detail/timer.hpp"
#include "runner/pool/pool_stats.hpp"
#include "runner/pool/slot_memory.hpp"
#include "worker/protocol/pool_slot.hpp"

namespace cancellable::detail {

using Clock = std::chrono::steady_clock;

struct Entry;

struct Worker : std::enable_shared_from_this<Worker> {
  // Its role, as its driver sees it (under the pool's lock):
  //   starting -> idle       it answered kReady
  //   idle     -> busy       a task was reserved for it (run()'s hand-over,
  //                          or its driver took one from the queue)
  //   busy     -> idle       the task concluded, and the worker is reusable
  //   busy     -> stopping   its task was cancelled with a grace: asked to
  //                          stop (cancel); its slot is free for others
  //   stopping -> idle       the task returned within the grace: reusable
  //   any      -> finished   its driver ended it: it died, was killed (at
  //                          once, or when a stop's grace ran out) or
  //                          retired, was idle too long, or the pool stops
  enum class State { starting, idle, busy, stopping, finished };
  // Its process (under the pool's lock):
  //   running -> killed          the pool sent it SIGKILL (kill_locked)
  //   running -> died            reaped, never killed by the pool
  //   killed  -> killed_reaped   reaped after the pool's kill
  enum class Process { running, killed, died, killed_reaped };
  bool killed() const noexcept { return process == Process::killed || process == Process::killed_reaped; }
  bool reaped() const noexcept { return process == Process::died || process == Process::killed_reaped; }
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
  Process process = Process::running;
  ProcessExit exit;
  std::shared_ptr<Entry> running;  // the task it runs, if any
  std::size_t tasks = 0;
  std::optional<std::size_t> baseline_rss;
  // CPU seconds: when its task with a CPU limit was posted, and in all (the
  // reap's count).
  long long cpu_seconds_at_post = 0;
  long long cpu_seconds = 0;
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
  std::vector<std::pair<std::shared_ptr<CompleterCore<StopOutcome>>, StopOutcome>> settle_at_reap;
  // While stopping: when the grace runs out (steady clock, nanoseconds
  // since its epoch; 0: no grace running). Its driver waits for the answer
  // until then and kills the worker if none came (no timer thread is woken
  // on the cancel's path). How a cancel stopped its task (for settled()).
  std::atomic<std::int64_t> grace_deadline_ns{0};
  StopOutcome stop = StopOutcome::none;
};

// Completes the job's settled() (if anyone asked) now.
inline void settle(PoolJob& job, StopOutcome how = StopOutcome::none) {
  if (auto settled = std::exchange(job.settled, nullptr)) settled->complete(how);
}

inline void settle_all(std::vector<std::pair<std::shared_ptr<CompleterCore<StopOutcome>>, StopOutcome>>& list) {
  for (auto& [settled, how] : list) settled->complete(how);
  list.clear();
}

// A task's progress (PoolRun::progress, TaskOptions::on_progress): its
// worker's while the task is posted there (attach, under the pool's lock,
// as it is posted), then the last value read from it (detach, under the
// pool's lock, as the task is concluded and before the worker can take
// another). Lock order: the pool's lock, then this mutex.
struct PoolProgress : std::enable_shared_from_this<PoolProgress> {
  void attach(const std::shared_ptr<Worker>& on);
  // The last report to make (changed since the previous), if any: to run
  // with nothing held.
  std::function<void()> detach();
  std::optional<Progress> current_locked() const;
  void start_tick_locked();
  void tick();

  mutable std::mutex mutex;
  std::function<void(const Progress&)> on_progress;
  std::chrono::milliseconds interval{20};
  std::shared_ptr<Worker> worker;
  std::optional<Progress> last;
  std::optional<Progress> reported;
  std::shared_ptr<Timer> timer;
};

// How a task's hand-over ended, as its driver needs to know.
struct Conclusion {
  bool answered = false;  // the worker answered (the worker is reusable)
  bool refused = false;   // never posted (the worker is reusable)
  bool retire = false;    // a recycle rule retires the worker
};

// A queued or running task. As the WaitHelper of its future, it lets a
// thread blocked in get() wait on the worker's answer itself.
struct Entry final : WaitHelper, std::enable_shared_from_this<Entry> {
  // Its life (under the pool's lock):
  //   queued   -> reserved   a worker was chosen for it (reserve_locked)
  //   queued   -> done       dropped: cancelled while queued, or the pool
  //                          stops or has degraded
  //   reserved -> posted     in the worker's memory, the worker told (post)
  //   reserved -> done       refused: its token was cancelled first, or its
  //                          arguments could not be written
  //   posted   -> done       concluded: answered, killed or died (conclude)
  enum class State { queued, reserved, posted, done };
  std::shared_ptr<PoolJob> job;
  // Written under the pool's lock; cancel() reads it without (a hint: a
  // queued entry is left for the sweep, see PoolImpl::cancel).
  std::atomic<State> state{State::queued};
  // A PoolRun waits for it (job->settled was set at submission): its
  // cancel while queued completes that at once, under the lock.
  bool settles = false;
  std::shared_ptr<Worker> worker;
  Clock::time_point queued_at = Clock::now();
  Clock::time_point taken;
  std::uint32_t seq = 0;  // its task number, once reserved
  std::weak_ptr<PoolImpl> pool;
  // Whoever first sees the worker's answer (the driver, or a helping
  // waiter) claims the conclusion; the other waits for it.
  std::atomic<bool> claimed{false};
  Conclusion conclusion;  // once done (under the pool's lock)

  void help_wait(const FutureStateBase& state) noexcept override;
  // (Nothing to do: every end of a posted task changes the worker's
  // response word and wakes help()'s wait; see kill_locked and reap.)
  void wake(const FutureStateBase&) noexcept override {}
};

class PoolImpl : public std::enable_shared_from_this<PoolImpl> {
 public:
  explicit PoolImpl(PoolOptions options) : options_(std::move(options)) {}
  // Tasks that run at once (PoolOptions::size).
  std::size_t size() const noexcept { return options_.size; }

  void start();

  ~PoolImpl() { stop(); }

  std::function<void()> submit(std::shared_ptr<PoolJob> job);

  // run() would take one more task now: there is room in the queue, or (the
  // queue empty) a worker is ready for a direct hand-over.
  bool has_room_locked() const;

  Future<void> room();

  PoolStats stats() const;

  void stop() noexcept;

  // drain() and shutdown(policy) (see pool.hpp).
  Future<void> drain(std::optional<StopPolicy> stop_running);

 private:
  // Intake draining and nothing queued or running: intake drained, every
  // worker killed (idle ones), none started any more.
  void drained_if_idle_locked();
  // The drain's waiters, once drained and every worker reaped: to complete
  // with nothing held.
  std::vector<std::shared_ptr<CompleterCore<void>>> drain_done_locked();
  // Stops the running task of entry on its worker by policy (cancel, and
  // shutdown): kills it, or asks it to stop and has its driver wait for the
  // grace (see Worker::grace_deadline_ns).
  void stop_running_locked(Entry& entry, const StopPolicy& policy);

  std::size_t target_locked() const {
    if (intake_ == Intake::drained) return 0;
    return options_.size + (standby_ == Standby::kept ? options_.standby : 0);
  }
  std::size_t ready_count_locked() const;
  // Workers that are or will be of use. A killed one counts until it is
  // reaped: its replacement starts at the reap, which follows the kill by a
  // few hundred microseconds. (Started at the kill, the spawn took the CPU
  // from the threads the cancel wakes: the cancel's p99 rose 3.3x.)
  std::size_t alive_count_locked() const;
  std::size_t idle_count_locked() const;
  // Slots taken: a worker being killed gives its slot back at once (to the
  // standby), before its driver has even woken up.
  std::size_t busy_count_locked() const;

  // SIGKILLs the worker (through its pidfd: never a stranger). Its process
  // group follows when the reaper reaps it (reap()), before anything waits
  // on its end. Its driver, if it waits on the worker, learns of the kill
  // then too: neither the group's kill nor the driver's work stands between
  // a cancel and the thread it wakes, or the next task (which the standby
  // takes at once).
  void kill_locked(Worker& w);

  void cancel(const std::shared_ptr<Entry>& entry);

  // Takes a task that never started out of the queue (its future failed
  // already); returns its settled() completer, to complete unlocked.
  std::shared_ptr<CompleterCore<StopOutcome>> drop_queued_locked(std::shared_ptr<Entry> entry);

  // The graded stop's end (its driver): the grace of the stop of task seq
  // on w ran out without an answer: the worker is killed.
  void grace_over(const std::shared_ptr<Worker>& w, std::uint32_t seq);

  // The driver's wait for the answer to a posted task: until the response
  // word leaves `from`, or a stop's grace runs out (then it returns `from`).
  std::uint32_t wait_answer(const Worker& w, std::uint32_t from);

  // Room waiters complete whenever run() would take a task, or would
  // answer at once (a degraded pool: PoolDegraded).
  void complete_room_waiters();

  void fail_room_waiters();

  static bool killed_from_elsewhere(const ProcessExit& exit);

  void record_start_failure_locked(const std::string& why);

  // --- the spawner -------------------------------------------------------------

  void spawner_loop();

  // Fails every queued task once the pool has given up starting workers and
  // none is left to run them. Called with lock held; unlocks around fail().
  void fail_queue_if_degraded_locked(std::unique_lock<std::mutex>& lock);

  std::shared_ptr<Worker> spawn_worker();

  // Has the reaper watch a new worker. If it cannot, the worker is killed
  // (its driver then ends it) and stop() reaps it.
  void watch_locked(const std::shared_ptr<Worker>& worker);

  // --- the reap ----------------------------------------------------------------

  // The reaper's thread: the worker has exited. What its task started in
  // its group dies with it (see reap_worker). Under the lock, which
  // kill_locked takes: no kill of its group can come after the reap has
  // freed the group id. (The process has exited: the reap does not wait.)
  void reap(const std::shared_ptr<Worker>& worker);

  // Drops a finished, reaped worker.
  void erase_locked(const std::shared_ptr<Worker>& worker);

  // --- a driver ----------------------------------------------------------------

  // Waits until the worker's response word leaves `from`, or the deadline.
  std::uint32_t wait_response(const Worker& w, std::uint32_t from, std::optional<Clock::time_point> deadline);

  void driver_loop(std::shared_ptr<Worker> worker);

  void drive(const std::shared_ptr<Worker>& w);

  // Concludes task entry.seq on worker w, whose response word read r (or
  // which refused it): reads the outcome, updates the worker and the
  // statistics, and completes the future (with nothing held). Called once
  // per task, by whoever claimed it: its driver, or (helping) a thread
  // blocked in the future's get().
  Conclusion conclude(const std::shared_ptr<Worker>& w, Entry& entry, std::uint32_t r,
                      std::optional<std::exception_ptr> refused, bool helping);

 public:
  // A thread about to block on entry's future (see Entry): while the task
  // is posted to a worker, waits on the worker's response word itself and,
  // if it sees the answer first, concludes the task on this thread. Returns
  // early (the caller then waits as usual) in every other case.
  void help(Entry& entry, const FutureStateBase& state) noexcept;

 private:

  // Gives entry to the idle worker w (under the lock).
  void reserve_locked(Worker& w, const std::shared_ptr<Entry>& entry);

  // Writes the task into the worker's memory and posts it as task seq (no
  // lock held: the arguments' encoding is the caller's code). The error
  // that kept it from being posted, if any.
  std::optional<std::exception_ptr> post(Worker& w, Entry& entry, std::uint32_t seq);

  void deliver(PoolJob& job, PoolSlot::Outcome outcome, const std::string& payload);

  bool recycle_due_locked(Worker& w);

  // The driver's end: kills the worker if it still runs, leaves it to the
  // reaper to reap, and lets the spawner replace it.
  void finish_locked(std::unique_lock<std::mutex>& lock, const std::shared_ptr<Worker>& w);

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
  // Removes the queued entries whose token is cancelled; their settled
  // futures and the room waiters are the caller's to complete (with the
  // lock released). Returns whether any was removed.
  bool sweep_locked(std::vector<std::shared_ptr<CompleterCore<StopOutcome>>>& settled);
  // Wakes the spawner (to sweep).
  void wake_spawner();
  void notify_all_threads() {
    changed_.notify_all();
    spawner_wake_.notify_all();
  }
  std::deque<std::shared_ptr<Entry>> queue_;
  std::vector<std::shared_ptr<Worker>> workers_;
  std::vector<std::shared_ptr<CompleterCore<void>>> room_waiters_;
  // Jobs cancelled while queued, released by the spawner thread.
  std::vector<std::shared_ptr<PoolJob>> dropped_jobs_;
  // Queued entries whose token was cancelled, left in the queue by cancel()
  // (no lock taken per task): the spawner removes them (sweep_locked), and
  // so does run() before it reports a full queue. A driver never posts them
  // (it checks the token under the lock).
  // (Shared with the tasks' cancellation hooks, which may outlive the pool.)
  const std::shared_ptr<std::atomic<bool>> sweep_wanted_ = std::make_shared<std::atomic<bool>>(false);
  std::size_t live_drivers_ = 0;
  // The pool's phase:
  //   running  -> degraded   the respawn budget is used up: run() answers
  //                          PoolDegraded (record_start_failure_locked)
  //   degraded -> running    respawn_period later: the spawner tries again
  //   running, degraded -> stopping   stop() (the destructor)
  enum class Phase { running, degraded, stopping };
  Phase phase_ = Phase::running;
  std::size_t start_failures_ = 0;
  std::string last_start_failure_;
  std::deque<Clock::time_point> recent_failures_;
  std::string degraded_;  // why (while degraded)
  Clock::time_point degraded_at_{};
  // After a transient spawn error: no spawn before backoff_until_.
  std::chrono::milliseconds backoff_{0};
  Clock::time_point backoff_until_{};
  // Whether the standby is kept up (idle_timeout lets it shrink away).
  //   kept -> shrunk   idle workers beyond the size exited (idle_timeout)
  //   shrunk -> kept   run() was called again
  enum class Standby { kept, shrunk };
  Standby standby_ = Standby::kept;
  // Whether run() takes tasks (drain, shutdown):
  //   open     -> draining   drain() or shutdown(): run() throws PoolClosed;
  //                          queued and running tasks go on (shutdown
  //                          fails the queued ones and stops the running)
  //   draining -> drained    nothing queued or running: every worker is
  //                          killed (they are idle) and none replaced; the
  //                          drain's future completes once all are reaped
  enum class Intake { open, draining, drained };
  Intake intake_ = Intake::open;
  std::vector<std::shared_ptr<CompleterCore<void>>> drain_waiters_;
  PoolStats stats_;
  Samples queue_wait_;
  Samples run_time_;

  std::thread spawner_;
};

}  // namespace cancellable::detail
