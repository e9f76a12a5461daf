// The errors an isolate (CancellableIsolate::run) can fail with, besides the
// token's own exception and the exceptions thrown by the work itself.
//
//   IsolateError           the work threw a type that cannot cross the process
//                          boundary as itself; carries the original type name
//                          (demangled) and what().
//   WorkerCrashed          the worker process died without a result (signal,
//                          abort, segfault, exit without a result); says how.
//   MemoryLimitExceeded    the work ran out of memory under
//                          IsolateOptions::memory_limit_bytes.
//   CpuTimeLimitExceeded   the work used more CPU time than
//                          IsolateOptions::cpu_time_limit.
//   ResultTooLarge         the encoded result is larger than
//                          IsolateOptions::max_result_bytes.
// The last four derive from WorkerFailed: "the worker failed" (it crashed,
// or was stopped at one of its limits), on either backend that runs the work
// in a process (a fork isolate, a pool worker), caught in one clause. A
// wall-clock IsolateOptions::timeout fails with TimeoutException.
//
// Exceptions thrown by the work keep their type when they are CancelledException,
// TimeoutException, one of <stdexcept> or <new>, or a type registered with
// register_isolate_exception<E>().
//
// Thread-safety: immutable values; safe to read from any thread.
#pragma once

#include <cstddef>
#include <chrono>
#include <exception>
#include <stdexcept>
#include <string>
#include <typeinfo>

#include "cancellable/stop_policy.hpp"

namespace cancellable {

// Base of the errors that say the worker failed: WorkerCrashed,
// MemoryLimitExceeded, CpuTimeLimitExceeded, ResultTooLarge.
class WorkerFailed : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class IsolateError : public std::runtime_error {
 public:
  IsolateError(std::string type_name, std::string message);
  // The demangled name of the type the work threw, e.g. "my::ParseError".
  const std::string& type_name() const noexcept { return type_name_; }
  // The original what() (empty if the type was not a std::exception).
  const std::string& message() const noexcept { return message_; }

 private:
  std::string type_name_;
  std::string message_;
};

// How a worker process ended: exited with a code, or killed by a signal.
// `unknown` when the kernel reaped it before the library could read its
// status (the host set SIGCHLD to SIG_IGN) and cannot report it (Linux
// before 6.15).
struct ProcessExit {
  enum class Kind { exited, killed, unknown };
  Kind kind = Kind::exited;
  int code = 0;    // exit code when kind == exited
  int signal = 0;  // signal number when kind == killed
  // Whether a cancel stopped the work, and how (stop_policy.hpp): none for
  // work that ended by itself or crashed.
  StopOutcome stop = StopOutcome::none;
  // "exited with code 3", "killed by signal 11 (SIGSEGV)", "ended with an
  // unknown status".
  std::string str() const;
  friend bool operator==(const ProcessExit&, const ProcessExit&) = default;
};

class WorkerCrashed : public WorkerFailed {
 public:
  // exit: how the process ended; detail: "ended without a result" or empty.
  explicit WorkerCrashed(ProcessExit exit, std::string detail = {});
  const ProcessExit& exit() const noexcept { return exit_; }

 private:
  ProcessExit exit_;
};
// The name WorkerCrashed had before isolates and pools shared one
// vocabulary; kept, the same type.
using IsolateCrashed = WorkerCrashed;

class MemoryLimitExceeded : public WorkerFailed {
 public:
  explicit MemoryLimitExceeded(std::size_t limit_bytes);
  std::size_t limit_bytes() const noexcept { return limit_bytes_; }

 private:
  std::size_t limit_bytes_;
};

class CpuTimeLimitExceeded : public WorkerFailed {
 public:
  explicit CpuTimeLimitExceeded(std::chrono::seconds limit);
  std::chrono::seconds limit() const noexcept { return limit_; }

 private:
  std::chrono::seconds limit_;
};

class ResultTooLarge : public WorkerFailed {
 public:
  ResultTooLarge(std::size_t result_bytes, std::size_t limit_bytes);
  std::size_t result_bytes() const noexcept { return result_bytes_; }
  std::size_t limit_bytes() const noexcept { return limit_bytes_; }

 private:
  std::size_t result_bytes_;
  std::size_t limit_bytes_;
};

namespace detail {
// How exceptions of one type cross the process boundary: encode(e), run in
// the worker on an exception of exactly that type, gives the bytes it sends;
// decode(bytes), run in the parent, rebuilds the exception. decode must
// accept any bytes (a worker can send anything) and must not throw.
struct IsolateExceptionCodec {
  std::string (*encode)(const std::exception& e);
  std::exception_ptr (*decode)(const std::string& bytes);
};
// Registers (or replaces) the codec of `type`. Lock-free to read, so that a
// forked worker can use it whatever other threads held at the fork.
void register_isolate_exception(const std::type_info& type, IsolateExceptionCodec codec);
}  // namespace detail

// Registers E so that an E thrown inside an isolate reaches the caller as an E
// (rebuilt from its what() with E(std::string)). Only an exception of exactly
// type E is matched, not one derived from it. Call it before running
// isolates, for instance at start-up; safe from any thread.
template <class E>
void register_isolate_exception() {
  detail::register_isolate_exception(
      typeid(E), {[](const std::exception& e) { return std::string(e.what()); },
                  [](const std::string& what) noexcept -> std::exception_ptr {
                    try {
                      return std::make_exception_ptr(E(what));
                    } catch (...) {
                      return std::current_exception();
                    }
                  }});
}

}  // namespace cancellable
