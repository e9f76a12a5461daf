#include "runner/process/worker_failure.hpp"

#include <signal.h>

namespace cancellable::detail {

std::exception_ptr worker_end_error(const ProcessExit& exit, const std::optional<std::chrono::seconds>& cpu_time_limit,
                                    long long cpu_seconds, std::string detail) {
  if (exit.kind == ProcessExit::Kind::killed && cpu_time_limit &&
      (exit.signal == SIGXCPU || (exit.signal == SIGKILL && cpu_seconds >= cpu_time_limit->count()))) {
    return std::make_exception_ptr(CpuTimeLimitExceeded(*cpu_time_limit));
  }
  if (exit.kind == ProcessExit::Kind::unknown) {
    return std::make_exception_ptr(WorkerCrashed(
        exit, "ended without a result; the kernel reaped it before its status could be read "
              "(SIGCHLD is ignored in this process)"));
  }
  if (detail.empty() && exit.kind == ProcessExit::Kind::exited) detail = "ended without a result";
  return std::make_exception_ptr(WorkerCrashed(exit, std::move(detail)));
}

}  // namespace cancellable::detail
