// Options of a WorkerPool (PoolOptions) and of one task it runs
// (TaskOptions). Plain values: copy them, share them between threads freely.
// What each option does is written beside it; the pool (pool.hpp) checks
// them when it is made or a task is run and throws std::invalid_argument for
// a value it cannot honour.
#pragma once

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <optional>

#include "cancellable/isolate_options.hpp"
#include "cancellable/stop_policy.hpp"

namespace cancellable {

struct PoolOptions {
  // The worker program: cancellable-worker, or a program of yours that calls
  // worker_main. Empty: this program, if it called worker_main (read from
  // /proc/self/exe when the pool is made); otherwise the pool throws
  // std::invalid_argument.
  std::filesystem::path worker_program;
  // Tasks that run at once.
  std::size_t size = 1;
  // Started, idle workers beyond size, ready to take the place of a worker
  // that was killed or recycled while its replacement starts.
  std::size_t standby = 1;
  // Tasks that may wait for a worker; run() beyond that throws PoolQueueFull.
  // Zero: no waiting room; run() succeeds while a worker is free.
  std::size_t max_queue = 1024;
  // Recycle (stop and replace) a worker after this many tasks.
  std::optional<std::size_t> recycle_after_tasks;
  // Recycle a worker whose resident memory grew more than this over what it
  // had after its first task (a soft limit, checked between tasks).
  std::optional<std::size_t> recycle_above_growth_bytes;
  // A hard limit on the memory a worker's tasks may add (RLIMIT_DATA over
  // its size at start): a task that breaches it fails with
  // MemoryLimitExceeded.
  std::optional<std::size_t> memory_limit_bytes;
  // Largest encoded arguments and result of a task (virtual reservations of
  // the shared memory; only what is written is ever backed by memory).
  std::size_t max_argument_bytes = std::size_t{256} << 20;
  std::size_t max_result_bytes = std::size_t{256} << 20;
  // A worker idle this long exits while more than `size` workers are up
  // (the standby shrinks away when the pool is not used); the standby is
  // started again with the next task.
  std::optional<std::chrono::milliseconds> idle_timeout;
  // How long a starting worker may take to become ready.
  std::chrono::milliseconds start_timeout{30'000};
  // After respawn_budget workers failed to start within respawn_period (the
  // program's own failures: not kills from elsewhere, not EAGAIN/ENOMEM,
  // which back off), the pool stops starting workers and run() throws
  // PoolDegraded; after respawn_period it tries again.
  std::size_t respawn_budget = 5;
  std::chrono::milliseconds respawn_period{60'000};
  // How a cancel stops a running task (stop_policy.hpp), unless its
  // TaskOptions::stop says otherwise. With a grace, a worker whose task
  // returns within it is reused.
  StopPolicy stop;
};

struct TaskOptions {
  // Wall-clock limit: the task fails with TimeoutException and its worker is
  // killed. Merged with the caller's token.
  std::optional<std::chrono::nanoseconds> timeout;
  // CPU time the task may use (whole seconds, at least 1): enforced by the
  // kernel as for a fork isolate (RLIMIT_CPU: SIGXCPU at the limit, SIGKILL
  // one second later if the task ignores or catches SIGXCPU); the task fails
  // with CpuTimeLimitExceeded. The worker's hard limit cannot be raised
  // again, so a worker that ran such a task is replaced after it (counted
  // in PoolStats::recycles).
  std::optional<std::chrono::seconds> cpu_time_limit;
  // Called on the default executor when the progress the task reports
  // (report_progress, from any thread of the task) changes, checked every
  // progress_interval while it runs, and once more as it ends if it changed
  // since: as IsolateOptions::on_progress.
  std::function<void(const Progress&)> on_progress;
  std::chrono::milliseconds progress_interval{20};
  // How a cancel or timeout stops the task while it runs; unset: the
  // pool's PoolOptions::stop.
  std::optional<StopPolicy> stop;
};

// WorkerPool::map's options.
struct MapOptions {
  // Inputs per chunk: one chunk is one hand-over to a worker, which runs
  // its inputs one after another. 0 (the default): ceil(inputs / (4 x the
  // pool's size)), as Python's multiprocessing.Pool.map chooses. A chunk's
  // encoded inputs and results must fit max_argument_bytes and
  // max_result_bytes.
  std::size_t chunk_size = 0;
  // For the whole map: timeout (from the call to the last result). For each
  // chunk: cpu_time_limit and stop. on_progress is not supported (it throws
  // std::invalid_argument).
  TaskOptions task;
};

}  // namespace cancellable
