// Test seams: hooks the tests use to reach paths a real machine rarely takes
// (a refused fork, a worker dying right after its commit) and to size the
// executor they block. Not installed: nothing in include/ declares them, and
// no production code sets them. A worker reads the exit hook (null unless a
// test set it) and calls nothing when it is null.
#pragma once

#include <sys/types.h>

#include <cstddef>

namespace cancellable::detail {

// Replaces fork() for isolate launches. Passing nullptr restores the real one.
using ForkFunction = pid_t (*)();
void set_fork_function(ForkFunction fork_function) noexcept;

// Runs in a forked worker after its outcome is committed, just before
// _exit. Passing nullptr removes it.
using ExitHook = void (*)();
void set_child_exit_hook(ExitHook hook) noexcept;

// The number of threads of the default executor.
std::size_t default_executor_thread_count();

}  // namespace cancellable::detail
