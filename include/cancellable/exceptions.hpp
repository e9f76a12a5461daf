// The exceptions a cancelled operation fails with.
//
// CancelledException is the "someone asked us to stop" error: code that cancels
// on purpose usually ignores it (see ignore_cancellation). TimeoutException is
// what a TimeoutCancellationToken cancels with by default; it deliberately does
// NOT derive from CancelledException, so a deadline that passed is reported as
// an error instead of being silently ignored.
//
// A token may also be cancelled with any exception of the user's own; derive it
// from CancelledException when it should be treated as a cancellation.
//
// Thread-safety: both types are immutable after construction; distinct and
// shared objects are safe to read from any thread.
#pragma once

#include <chrono>
#include <exception>
#include <optional>
#include <string>

namespace cancellable {

class CancelledException : public std::exception {
 public:
  // Text: "CancelledException: The operation was cancelled by a CancellationToken."
  CancelledException();
  // As above with " (reason: <reason>)" appended.
  explicit CancelledException(std::string reason);

  const char* what() const noexcept override { return message_.c_str(); }
  // The reason given when cancelling, if any.
  const std::optional<std::string>& reason() const noexcept { return reason_; }

 private:
  std::optional<std::string> reason_;
  std::string message_;
};

class TimeoutException : public std::exception {
 public:
  // Text: "TimeoutException after <duration>: The operation timed out."
  explicit TimeoutException(std::chrono::nanoseconds timeout);
  TimeoutException(std::chrono::nanoseconds timeout, std::string message);

  const char* what() const noexcept override { return message_.c_str(); }
  // The timeout that passed.
  std::chrono::nanoseconds timeout() const noexcept { return timeout_; }

 private:
  std::chrono::nanoseconds timeout_;
  std::string message_;
};

// "2s", "100ms", "1500us", "42ns": the largest unit that shows the value exactly.
std::string format_duration(std::chrono::nanoseconds duration);

}  // namespace cancellable
