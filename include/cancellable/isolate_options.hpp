// Options of one isolate run (CancellableIsolate::run), and the progress a
// running isolate reports.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "cancellable/stop_policy.hpp"

namespace cancellable {

class WorkerPool;

// Where the work of an isolate runs.
enum class Backend {
  automatic,  // a forked process; a thread where processes are not available
              // (fork refused, or CANCELLABLE_BACKEND=thread in the environment)
  process,    // always a forked process; fails if fork fails
  thread,     // always a thread: cancellation fails the future at once but
              // cannot stop the work; limits other than timeout do not apply
  pool,       // a worker of IsolateOptions::pool (see pool.hpp); the work
              // must be a Task (CancellableIsolate::run(task, args...)): a
              // closure cannot run in another program
};

// "automatic", "process", "thread", "pool".
const char* to_string(Backend backend) noexcept;

// The latest progress the work reported with report_progress().
struct Progress {
  std::uint64_t done = 0;
  std::uint64_t total = 0;
  std::string stage;  // at most 95 bytes are kept
  friend bool operator==(const Progress&, const Progress&) = default;
};

struct IsolateOptions {
  Backend backend = Backend::automatic;
  // Wall-clock limit: the run fails with TimeoutException and the process is
  // killed. Merged with the caller's token.
  std::optional<std::chrono::nanoseconds> timeout;
  // Memory the work may add to what the process inherited at fork:
  // RLIMIT_DATA = the data size at fork (after malloc_trim) + this. Counts
  // the heap, anonymous mappings and thread stacks, including malloc's
  // growth inside arenas reserved before the fork; not shared mappings, nor
  // free memory already mapped in the inherited heap. Breach:
  // MemoryLimitExceeded.
  std::optional<std::size_t> memory_limit_bytes;
  // CPU time (RLIMIT_CPU, whole seconds). Breach: CpuTimeLimitExceeded.
  std::optional<std::chrono::seconds> cpu_time_limit;
  // Largest encoded result accepted. Breach: ResultTooLarge.
  std::size_t max_result_bytes = std::size_t{1} << 30;
  // Called on the default executor when the reported progress changes,
  // checked every progress_interval while the work runs.
  std::function<void(const Progress&)> on_progress;
  std::chrono::milliseconds progress_interval{20};
  // How a cancel or timeout stops the work while it runs (stop_policy.hpp):
  // by default SIGKILL at once; with a grace, the work is asked first
  // (work_stop_token()) and killed when the grace runs out, while the
  // future fails at once either way. With Backend::pool, the task's
  // TaskOptions::stop.
  StopPolicy stop;
  // The pool that runs the work with Backend::pool (not owned: it must
  // outlive the call to run(); a run it still holds when destroyed fails
  // with CancelledException). Its PoolOptions set the memory limit and the
  // largest result: with Backend::pool, memory_limit_bytes and
  // max_result_bytes must keep their defaults.
  WorkerPool* pool = nullptr;
};

}  // namespace cancellable
