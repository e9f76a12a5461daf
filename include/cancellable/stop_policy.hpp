// Graded stop: how the work of a cancelled run is stopped, and how that work
// hears it is asked to stop.
//
// ## What happens
// By default (StopPolicy::grace zero) a cancel or timeout SIGKILLs the
// worker's process group at once, as it always has. With a grace, a cancel
// of a running isolate (Backend::process or Backend::thread) or pool task:
//   - fails the caller's future at once with the token's exception, exactly
//     as without a grace: the caller never waits for the grace;
//   - asks the work to stop: the token work_stop_token() returns inside the
//     work is cancelled (and its stop_token(); a closure that takes a
//     std::stop_token gets one stop-requested at the same moment), and with
//     terminate_first the worker's process group also gets SIGTERM;
//   - SIGKILLs the worker's process group if the worker still runs when the
//     grace runs out (a thread cannot be killed: it is abandoned).
// A pool worker whose task returns within the grace (with anything: its
// value or exception is dropped, the caller's future failed already) is
// reused: its slot serves the next task without a spawn. A fork isolate's
// worker exits once its work returns; what it started in its process group
// is killed then, as after any worker's end.
//
// How it ended is told once the work is over: Isolate::exited()'s
// ProcessExit::stop, and PoolRun::settled()'s value (StopOutcome).
//
// A task that is cancelled before it starts never starts, grace or not.
//
// ## Thread-safety
// work_stop_token() may be called from any thread of the work, any number
// of times; every call during one run returns the same token. In a worker
// process the first call starts one small thread that watches for the
// parent's request (a futex on the worker's shared memory); it lives as long
// as the process.
#pragma once

#include <chrono>

#include "cancellable/cancellation_token.hpp"

namespace cancellable {

// How a run's work is stopped when its token is cancelled while it runs.
struct StopPolicy {
  // How long the work may take to stop by itself once asked. Zero (the
  // default): SIGKILL at once, the work is not asked.
  std::chrono::nanoseconds grace{0};
  // Also send SIGTERM to the worker's process group when asking: for work
  // that does not watch work_stop_token() but handles SIGTERM (or whose
  // children do). Ignored by the thread backend.
  bool terminate_first = false;
};

// How a run's work ended, as far as a stop goes.
enum class StopOutcome {
  none,                   // not stopped: it ended by itself (or never started)
  killed,                 // killed at once (no grace)
  stopped,                // asked to stop, it ended within the grace
  killed_after_grace,     // asked to stop, still running when the grace ran
                          // out: its process group got SIGKILL
  abandoned_after_grace,  // (thread backend) asked to stop, still running
                          // when the grace ran out: the thread is left to
                          // finish on its own, its outcome dropped
};

// "none", "killed", "stopped", "killed after grace", "abandoned after grace".
const char* to_string(StopOutcome outcome) noexcept;

// Inside the work of an isolate run or a pool task (any thread of it): a
// token cancelled when the run is asked to stop (a cancel or timeout with a
// StopPolicy grace). Never cancelled when the run is killed at once (no
// grace). Outside such work: CancellationToken::none().
CancellationToken work_stop_token();

}  // namespace cancellable
