#include "cancellable/exceptions.hpp"

namespace cancellable {

namespace {
constexpr const char* kCancelledText =
    "CancelledException: The operation was cancelled by a CancellationToken.";
}

CancelledException::CancelledException() : message_(kCancelledText) {}

CancelledException::CancelledException(std::string reason)
    : reason_(std::move(reason)),
      message_(std::string(kCancelledText) + " (reason: " + *reason_ + ")") {}

TimeoutException::TimeoutException(std::chrono::nanoseconds timeout)
    : TimeoutException(timeout, "The operation timed out.") {}

TimeoutException::TimeoutException(std::chrono::nanoseconds timeout, std::string message)
    : timeout_(timeout),
      message_("TimeoutException after " + format_duration(timeout) + ": " + std::move(message)) {}

std::string format_duration(std::chrono::nanoseconds duration) {
  const auto ns = duration.count();
  if (ns != 0 && ns % 1'000'000'000 == 0) return std::to_string(ns / 1'000'000'000) + "s";
  if (ns != 0 && ns % 1'000'000 == 0) return std::to_string(ns / 1'000'000) + "ms";
  if (ns != 0 && ns % 1'000 == 0) return std::to_string(ns / 1'000) + "us";
  return std::to_string(ns) + "ns";
}

}  // namespace cancellable
