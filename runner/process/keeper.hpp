// The keeper: a small process that kills the process groups of this
// process's isolate workers when this process dies.
//
// A worker dies with its parent through PR_SET_PDEATHSIG, but what the work
// started (a `system("... &")`, a double fork) would keep running: the
// group kill the reaper sends after a worker's exit died with the parent.
// The keeper is one process per parent, started with the first pool or
// process isolate, shared by both. It is a worker program exec'd with
// posix_spawn (`PROGRAM --cancellable-keeper PID`; the program a pool
// offers, else $CANCELLABLE_WORKER_PROGRAM, else the installed
// cancellable-worker), which forks itself once so that it is not this
// process's child and no waitpid of the host can reap it: nothing of this
// process is copied into it and no pthread_atfork handler runs. Only when
// no worker program is known (isolates alone, the library not installed) it
// is a double fork of this process, as a fallback. It calls setsid, so a
// terminal's Ctrl-C does not reach it before it acts. Each worker registers its process group with the keeper
// over a pipe before it runs the work; the parent unregisters the group once
// it has reaped the worker and killed the group. When the parent exits (its
// pidfd becomes readable, or the pipe's write end closes) the keeper
// SIGKILLs every registered group and exits.
//
// Not covered: descendants that leave the worker's group (setsid, setpgid)
// or that the keeper cannot signal; a keeper killed from outside (the
// protection then ends silently for this process).
#pragma once

#include <sys/types.h>

#include <filesystem>

namespace cancellable::detail {

// A pool's worker program: the keeper is started from it (the first one
// offered is kept).
void offer_keeper_program(const std::filesystem::path& program);

// Starts the keeper if it is not running and returns the write end of its
// pipe (close-on-exec, non-blocking). Throws std::system_error if it cannot
// be started (no descriptor, no process).
int ensure_keeper_started();

// The parent, after reaping the worker of pgid and killing its group (the
// messages: worker/protocol/keeper_messages.hpp).
void keeper_forget(pid_t pgid) noexcept;

}  // namespace cancellable::detail
