// The `cancellable` command: shared pieces of its sub-commands.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "cancellable/cancellation_token.hpp"

namespace cancellable::cli {

// Exit statuses, documented in `cancellable --help`.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;       // the work failed (bad JSON, missing file, ...)
inline constexpr int kExitUsage = 2;       // bad arguments
inline constexpr int kExitTimeout = 124;   // --timeout passed (as timeout(1))
inline constexpr int kExitInterrupted = 130;  // Ctrl-C (128 + SIGINT)

// "250ms", "2s", "1.5s", "1m", "500us": a duration, or nothing if malformed.
std::optional<std::chrono::nanoseconds> parse_duration(const std::string& text);

// Cancels `token` when SIGINT or SIGTERM arrives. Must be created before any
// other thread: it blocks those signals in the calling thread (inherited by
// every thread started later) and waits for them on a thread of its own.
class InterruptWatcher {
 public:
  explicit InterruptWatcher(CancellationToken token);
  ~InterruptWatcher();
  InterruptWatcher(const InterruptWatcher&) = delete;
  InterruptWatcher& operator=(const InterruptWatcher&) = delete;
  bool interrupted() const noexcept;

 public:
  struct State;

 private:
  State* state_;
};

int run_demo();
struct ParseArgs {
  std::string file;
  std::optional<std::chrono::nanoseconds> timeout;
  std::string backend = "fork";
  std::optional<std::string> pointer;
};
int run_parse(const ParseArgs& args);
int run_bench(bool quick, bool json);

}  // namespace cancellable::cli
