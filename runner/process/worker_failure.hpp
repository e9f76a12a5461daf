// One meaning for a worker that ended without an outcome, whatever the
// backend (fork isolate, pool): the exception its run fails with.
#pragma once

#include <chrono>
#include <exception>
#include <optional>
#include <string>

#include "cancellable/isolate_errors.hpp"

namespace cancellable::detail {

// The error of work whose worker ended (exit) without an outcome:
// - CpuTimeLimitExceeded with a CPU time limit, if it was killed by SIGXCPU
//   (the kernel, at the soft limit) or by SIGKILL once the CPU time it used
//   for this work (cpu_seconds, from the reap) reached the limit (the
//   kernel, at the hard limit one second later, when the work ignored or
//   caught SIGXCPU);
// - WorkerCrashed otherwise, with `detail` (for an exit code, "ended
//   without a result" unless given), or saying the kernel reaped it unread
//   (SIGCHLD ignored).
// (The run's own kills, a cancel, are not failures: those runs failed with
// their token's exception already.)
std::exception_ptr worker_end_error(const ProcessExit& exit, const std::optional<std::chrono::seconds>& cpu_time_limit,
                                    long long cpu_seconds, std::string detail = {});

}  // namespace cancellable::detail
