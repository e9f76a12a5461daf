// What a forked isolate child runs, from the instant after fork() to _exit().
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>

#include "cancellable/detail/isolate_runtime.hpp"
#include "runner/control_block.hpp"
#include "runner/result_channel.hpp"

namespace cancellable::detail {

struct ChildSetup {
  pid_t parent_pid = 0;
  ControlBlock* block = nullptr;
  ChildLimits limits;
  std::optional<std::chrono::seconds> cpu_time_limit;
  const std::function<void(ChildChannel&)>* body = nullptr;
  // An eventfd the child writes to once its outcome is committed (-1: none).
  // It stays open in the child as descriptor 3.
  int commit_fd = -1;
};

// Exit code of a child whose parent was already gone when it started.
inline constexpr int kExitParentGone = 125;

// In the child after fork: own process group, death with the parent, default
// signal dispositions and an empty mask, inherited descriptors above 2
// closed (but the commit descriptor), resource limits applied; then the
// body, its outcome written to the channel, the commit signalled, and _exit.
// Never returns.
[[noreturn]] void run_child(const ChildSetup& setup) noexcept;

// The control block that report_progress() writes to on this thread.
ControlBlock*& progress_block_of_this_thread() noexcept;

}  // namespace cancellable::detail
