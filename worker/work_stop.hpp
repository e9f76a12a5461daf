// The work's side of a graded stop (include/cancellable/stop_policy.hpp):
// the token work_stop_token() returns, cancelled when the parent writes the
// run's number into the worker header's stop word. Used by a forked
// isolate's child, a pool worker and an isolate's thread alike.
#pragma once

#include <cstdint>
#include <optional>

#include "cancellable/cancellation_token.hpp"
#include "worker/protocol/worker_header.hpp"

namespace cancellable::detail {

// In a worker process, before each piece of work: the header whose stop
// word asks it to stop, and the value that asks (the run's number: a stop
// word left by an earlier run never stops this one). Forgets the previous
// run's token.
void begin_process_work(WorkerHeader* header, std::uint32_t run) noexcept;

// On an isolate's thread (thread backend), for the duration of the work:
// the token work_stop_token() returns there.
class ThreadWorkScope {
 public:
  explicit ThreadWorkScope(CancellationToken token) noexcept;
  ~ThreadWorkScope();
  ThreadWorkScope(const ThreadWorkScope&) = delete;
  ThreadWorkScope& operator=(const ThreadWorkScope&) = delete;

 private:
  std::optional<CancellationToken> previous_;
};

}  // namespace cancellable::detail
