// The tasks of the `cancellable-worker` program (see pool.hpp, task.hpp)
// that misbehave on purpose, for tests, benchmarks and trying a pool out;
// its JSON tasks are the json component's (json_tasks.hpp). The parent
// includes this header to name them; only the worker program defines them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cancellable/task.hpp"

namespace cancellable::builtin {

// Returns 0 at once (round-trip benchmarks).
inline constexpr Task<int()> empty{"cancellable.empty"};
// Returns its argument (throughput benchmarks: the tiniest task that takes
// an input, for WorkerPool::map).
inline constexpr Task<std::int64_t(std::int64_t)> identity{"cancellable.identity"};
// The worker's process id.
inline constexpr Task<int()> pid{"cancellable.pid"};
// Returns its argument.
inline constexpr Task<std::string(std::string)> echo{"cancellable.echo"};
// Reports progress (0 of 0, "spinning") and never returns (until killed).
inline constexpr Task<int()> spin{"cancellable.spin"};
// Sleeps this many milliseconds, then returns them.
inline constexpr Task<std::int64_t(std::int64_t)> sleep_ms{"cancellable.sleep_ms"};
// Raises this signal in the worker.
inline constexpr Task<int(int)> crash{"cancellable.crash"};
// Ends the worker with this exit code (_exit).
inline constexpr Task<int(int)> exit_code{"cancellable.exit_code"};
// Allocates and touches this many bytes, keeps them (they are the worker's
// until it is recycled), and returns the count.
inline constexpr Task<std::uint64_t(std::uint64_t)> allocate{"cancellable.allocate"};
// Throws std::runtime_error with this message.
inline constexpr Task<int(std::string)> fail{"cancellable.fail"};
// The worker's open descriptors (from /proc/self/fd), sorted.
inline constexpr Task<std::vector<int>()> descriptors{"cancellable.descriptors"};
// Forks a child that sleeps, writes its pid to the file at the path given,
// then spins until killed.
inline constexpr Task<int(std::string)> spawn_child_and_spin{"cancellable.spawn_child_and_spin"};
// Reports progress (0 of 1, "waiting"), sleeps until asked to stop
// (work_stop_token(), stop_policy.hpp), then returns 0: a task that
// cooperates with a graded stop.
inline constexpr Task<int()> wait_for_stop{"cancellable.wait_for_stop"};

}  // namespace cancellable::builtin
