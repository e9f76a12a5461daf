// The keeper's loop (runner/process/keeper.hpp): what runs in the keeper process,
// whether it was spawned as `<worker program> --cancellable-keeper PID` or,
// as a fallback for isolates alone, forked.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>
#include <initializer_list>

#include "worker/protocol/keeper_messages.hpp"

namespace cancellable::detail {

[[noreturn]] void run_keeper(int read_fd, pid_t parent) noexcept {
  ::setsid();  // (A terminal's Ctrl-C does not reach it before it acts.)
  struct sigaction action {};
  action.sa_handler = SIG_IGN;
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGTSTP, SIGTTIN, SIGTTOU}) {
    ::sigaction(sig, &action, nullptr);
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (read_fd != kKeeperDescriptor) {
    ::dup2(read_fd, kKeeperDescriptor);
    read_fd = kKeeperDescriptor;
  }
  ::close_range(kKeeperDescriptor + 1, ~0U, 0);
  ::close_range(0, 2, 0);
  const int parent_fd = static_cast<int>(::syscall(SYS_pidfd_open, parent, 0));
  // Registered groups (a worker registers once, the parent forgets it after
  // the reap): a fixed table, no allocation.
  static pid_t groups[65536];
  std::size_t count = 0;
  bool parent_gone = parent_fd < 0;
  while (!parent_gone) {
    pollfd fds[2] = {{read_fd, POLLIN, 0}, {parent_fd, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) continue;
    if (fds[1].revents != 0) parent_gone = true;
    // Read everything pending, also after the parent's death: a worker's
    // registration may still be in the pipe.
    for (;;) {
      KeeperMessage message;
      const ssize_t n = ::read(read_fd, &message, sizeof message);
      if (n == 0) {
        parent_gone = true;  // the write end closed: the parent is gone
        break;
      }
      if (n != static_cast<ssize_t>(sizeof message)) break;  // EAGAIN (non-blocking) or short
      if (message > 0) {
        if (count < sizeof groups / sizeof groups[0]) groups[count++] = message;
      } else {
        for (std::size_t i = 0; i < count; ++i) {
          if (groups[i] == -message) {
            groups[i] = groups[--count];
            break;
          }
        }
      }
    }
  }
  for (std::size_t i = 0; i < count; ++i) ::kill(-groups[i], SIGKILL);
  ::_exit(0);
}

}  // namespace cancellable::detail
