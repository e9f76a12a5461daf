// A worker process as the parent sees it, through its pidfd: signalling it,
// asking whether it is still this process's unreaped child, and reading how
// it ended. Used by every run that starts a worker process.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <optional>

#include <cstdint>

#include "cancellable/isolate_errors.hpp"
#include "worker/protocol/worker_header.hpp"

namespace cancellable::detail {

// pidfd_open(pid): -1 with errno on failure. (Direct system calls: glibc
// 2.36's <sys/pidfd.h> lacks C linkage for C++.)
int open_pidfd(pid_t pid) noexcept;
// pidfd_send_signal: never reaches a stranger, whatever became of the pid.
int send_signal_to_pidfd(int pidfd, int sig) noexcept;

// Is the process of pidfd still this process's child, not reaped yet? A
// waitid on a pidfd answers only for this process's own children (ECHILD
// otherwise): true means its pid, and its process group id, cannot have
// been reused, so they may be signalled.
bool still_our_unreaped_child(int pidfd) noexcept;

// Kills the worker of pidfd (pid, which leads its own process group) and
// everything it started in its group. The group first, while the leader
// still exists (live or a zombie: its pidfd still takes a signal), which
// keeps the group id from being reused; then the leader through its pidfd.
// So the descendants die at once whatever SIGCHLD's disposition: when the
// host ignores SIGCHLD the kernel reaps the leader the moment it dies, and
// no later group kill could tell the group from a stranger's.
void kill_worker_and_group(int pidfd, pid_t pid) noexcept;
// As kill_worker_and_group, with any signal.
void signal_worker_and_group(int pidfd, pid_t pid, int sig) noexcept;

// The first step of a graded stop (stop_policy.hpp), for every backend
// that runs work in a worker process: writes `run` into the header's stop
// word and wakes the work's watcher (worker/work_stop.cpp), which cancels
// the work's token; with terminate, SIGTERM to the worker's group as well.
// Call while the worker is unreaped (under the lock its reap takes).
void ask_worker_to_stop(WorkerHeader& header, std::uint32_t run, int pidfd, pid_t pid, bool terminate) noexcept;

// How the process of pidfd ended, from the kernel, once it was reaped by
// someone else (the kernel itself, when the host ignores SIGCHLD), through
// PIDFD_GET_INFO (Linux 6.15+); nothing if the kernel cannot tell.
std::optional<ProcessExit> exit_from_pidfd(int pidfd) noexcept;
// As exit_from_pidfd, or ProcessExit::Kind::unknown.
ProcessExit exit_from_pidfd_or_unknown(int pidfd) noexcept;

// How a reaped child ended, from waitid's siginfo.
ProcessExit exit_of(const siginfo_t& info) noexcept;

// Starts argv[0] with posix_spawn (clone(CLONE_VM | CLONE_VFORK) + exec:
// nothing of this process is copied, no pthread_atfork handler runs), with
// `fd` as descriptor `as_fd` and every descriptor above it closed in the
// child, no signal blocked, every signal's action the default, and, if
// own_group, a process group of its own. Returns the pid, or posix_spawn's
// error (a positive errno) as the negative.
pid_t spawn_program(char* const argv[], int fd, int as_fd, bool own_group) noexcept;

// The CPU time (user and system, whole seconds) the live process pid has
// used so far, from /proc/<pid>/stat; 0 if it cannot be read.
long long cpu_seconds_used(pid_t pid) noexcept;

// What reaping a worker tells.
struct ReapedWorker {
  ProcessExit exit;
  // Its CPU time (user and system), whole seconds; 0 if someone else (the
  // kernel, the host's waitpid(-1)) reaped it.
  long long cpu_seconds = 0;
};

// Reaps the worker of pidfd (pid, the leader of its own process group),
// which has exited (its pidfd is readable; otherwise this waits for it):
// first kills what it left running in its group (unless group_killed: the
// group has its SIGKILL already), while the unreaped leader still reserves
// the group id, and forgets the group at the keeper; then reaps it. Used by
// every backend, so a worker's end means the same to all of them.
ReapedWorker reap_worker(int pidfd, pid_t pid, bool group_killed) noexcept;

}  // namespace cancellable::detail
