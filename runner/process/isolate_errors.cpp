#include "cancellable/isolate_errors.hpp"

#include <string.h>

#include "cancellable/exceptions.hpp"
#include "cancellable/isolate_options.hpp"

namespace cancellable {

namespace {
std::string with_prefix(const char* type, const std::string& text) {
  return std::string(type) + ": " + text;
}
}  // namespace

const char* to_string(Backend backend) noexcept {
  switch (backend) {
    case Backend::automatic: return "automatic";
    case Backend::process: return "process";
    case Backend::thread: return "thread";
    case Backend::pool: return "pool";
  }
  return "unknown";
}

IsolateError::IsolateError(std::string type_name, std::string message)
    : std::runtime_error(with_prefix("IsolateError", "the isolate threw " + type_name +
                                                         (message.empty() ? "" : ": " + message))),
      type_name_(std::move(type_name)),
      message_(std::move(message)) {}

std::string ProcessExit::str() const {
  if (kind == Kind::exited) return "exited with code " + std::to_string(code);
  if (kind == Kind::unknown) return "ended with an unknown status";
  const char* name = ::sigabbrev_np(signal);
  return "killed by signal " + std::to_string(signal) + (name ? std::string(" (SIG") + name + ")" : "");
}

WorkerCrashed::WorkerCrashed(ProcessExit exit, std::string detail)
    : WorkerFailed(with_prefix(
          "WorkerCrashed",
          "the isolate's process " +
              (detail.empty() ? (exit.kind == ProcessExit::Kind::killed ? "was " : "") + exit.str()
                              : detail + " (" + exit.str() + ")"))),
      exit_(exit) {}

MemoryLimitExceeded::MemoryLimitExceeded(std::size_t limit_bytes)
    : WorkerFailed(with_prefix("MemoryLimitExceeded",
                                     "the isolate ran out of memory under its memory limit of " +
                                         std::to_string(limit_bytes) + " bytes")),
      limit_bytes_(limit_bytes) {}

CpuTimeLimitExceeded::CpuTimeLimitExceeded(std::chrono::seconds limit)
    : WorkerFailed(with_prefix("CpuTimeLimitExceeded",
                                     "the isolate used more than its CPU time limit of " +
                                         format_duration(limit))),
      limit_(limit) {}

ResultTooLarge::ResultTooLarge(std::size_t result_bytes, std::size_t limit_bytes)
    : WorkerFailed(with_prefix("ResultTooLarge", "the isolate's result is " +
                                                           std::to_string(result_bytes) +
                                                           " bytes, over the limit of " +
                                                           std::to_string(limit_bytes) + " bytes")),
      result_bytes_(result_bytes),
      limit_bytes_(limit_bytes) {}

}  // namespace cancellable
