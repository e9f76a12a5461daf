// The messages on the keeper's pipe (runner/process/keeper.hpp): a worker registers
// its process group before it runs the work, the parent forgets it once it
// has reaped the worker and killed the group. One 4-byte message each, so a
// write is atomic (under PIPE_BUF) and needs no lock.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <cstdint>

namespace cancellable::detail {

// +pgid registers a group, -pgid forgets it.
using KeeperMessage = std::int32_t;

// Async-signal-safe (a worker calls it after fork); does nothing if fd < 0.
// A full pipe (16,384 pending messages) loses the message.
inline void send_keeper_message(int fd, KeeperMessage message) noexcept {
  if (fd < 0 || message == 0) return;
  (void)!::write(fd, &message, sizeof message);
}

inline void keeper_register(int fd, pid_t pgid) noexcept {
  if (pgid > 0) send_keeper_message(fd, static_cast<KeeperMessage>(pgid));
}

// How a worker program is started as the keeper: `PROGRAM --cancellable-keeper
// PARENT_PID`, with the read end of the pipe on descriptor 3. worker_main()
// forks once (so that the keeper is not the parent's child, and no waitpid
// of the host can reap it) and runs run_keeper() in the grandchild.
constexpr const char* kKeeperFlag = "--cancellable-keeper";
constexpr int kKeeperDescriptor = 3;

// The keeper's loop (worker/keeper.cpp): until `parent` dies (its pidfd
// turns readable or the pipe's write end closes), then SIGKILL every group
// still registered. Only system calls: it may run in a process forked from a
// threaded one.
[[noreturn]] void run_keeper(int read_fd, pid_t parent) noexcept;

}  // namespace cancellable::detail
