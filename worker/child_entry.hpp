// What a forked isolate child runs, from the instant after fork() to _exit().
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>

#include "cancellable/detail/isolate_runtime.hpp"
#include "worker/protocol/control_block.hpp"
#include "worker/protocol/result_channel.hpp"

namespace cancellable::detail {

struct ChildSetup {
  pid_t parent_pid = 0;
  ControlBlock* block = nullptr;
  // Built by the parent before fork: the child constructs no stream (an
  // std::ostream takes libstdc++'s locale mutex when a global locale is set,
  // which another thread of the parent may have held at the fork).
  ChildChannelImpl* channel = nullptr;
  std::optional<std::size_t> memory_limit_bytes;
  std::optional<std::chrono::seconds> cpu_time_limit;
  const std::function<void(ChildChannel&)>* body = nullptr;
  // The keeper's pipe (runner/process/keeper.hpp): the child registers its process
  // group there before it runs the work, so that what the work starts dies
  // with the parent too. -1: none.
  int keeper_fd = -1;
  // An eventfd the child writes to once its outcome is committed (-1: none).
  // It stays open in the child as descriptor 3.
  int commit_fd = -1;
};

// Caps RLIMIT_DATA at the data size now plus extra_bytes, with large
// allocations made to map memory of their own (so that the limit counts
// them). Used by a forked child and by a pool worker. 0, or the errno.
int limit_data_growth(std::size_t extra_bytes) noexcept;

// The run number of a forked isolate's one piece of work: the value of its
// header's stop word that asks it to stop (graded stop).
inline constexpr std::uint32_t kIsolateRun = 1;

// Exit code of a child whose parent was already gone when it started.
inline constexpr int kExitParentGone = 125;
// Exit code of a child whose setup failed (the step and errno are in the
// control block).
inline constexpr int kExitSetupFailed = 126;

// In the child after fork: own process group, death with the parent, default
// signal dispositions and an empty mask, inherited descriptors above 2
// closed (but the commit descriptor); then it waits at the start gate until
// the parent holds its pidfd, applies the resource limits, runs the body,
// writes its outcome to the channel, signals the commit, and _exits. A setup
// step that fails is reported in the control block (exit code
// kExitSetupFailed). Takes no lock that a thread of the parent may have held
// at the fork. Never returns.
[[noreturn]] void run_child(const ChildSetup& setup) noexcept;

// True in an isolate's worker process (set first thing after fork). The
// library's threads (reaper, timers, executor) do not exist there, so no
// isolate may start in it.
bool in_isolate_worker() noexcept;

// The worker header that report_progress() writes to on this thread (an
// isolate's control block), or null.
WorkerHeader*& progress_block_of_this_thread() noexcept;
// Writes the step that failed, and its errno, for the parent (before the
// worker exits).
void report_setup_failure(WorkerHeader* header, SetupStep step, int error) noexcept;
// The header of this worker process (a forked isolate's, a pool worker's):
// report_progress() writes to it from any thread of the work (a worker
// process runs one piece of work at a time).
void set_worker_process_header(WorkerHeader* header) noexcept;

}  // namespace cancellable::detail
