#include "runner/keeper.hpp"

#include "worker/protocol/keeper_messages.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <mutex>
#include <system_error>

namespace cancellable::detail {

namespace {

std::mutex keeper_mutex;
std::atomic<int> keeper_fd{-1};

// The keeper's loop: runs in the double-forked process and never returns.
// Only system calls: it was forked from a threaded process.
[[noreturn]] void keeper_main(int read_fd, pid_t parent) noexcept {
  ::setsid();
  struct sigaction action {};
  action.sa_handler = SIG_IGN;
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGTSTP, SIGTTIN, SIGTTOU}) {
    ::sigaction(sig, &action, nullptr);
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (read_fd != 3) {
    ::dup2(read_fd, 3);
    read_fd = 3;
  }
  ::close_range(4, ~0U, 0);
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

}  // namespace

int ensure_keeper_started() {
  const int existing = keeper_fd.load(std::memory_order_acquire);
  if (existing >= 0) return existing;
  std::lock_guard lock(keeper_mutex);
  if (keeper_fd.load(std::memory_order_relaxed) >= 0) return keeper_fd.load(std::memory_order_relaxed);
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    throw std::system_error(errno, std::generic_category(), "CancellableIsolate: the keeper's pipe");
  }
  // The read end does not block the keeper's drain; the write end never
  // blocks a worker or the parent (a full pipe loses a message: 16,384
  // pending ones).
  ::fcntl(fds[0], F_SETFL, O_NONBLOCK);
  ::fcntl(fds[1], F_SETFL, O_NONBLOCK);
  const pid_t parent = ::getpid();
  sigset_t all;
  sigset_t previous;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &previous);
  const pid_t middle = ::fork();
  if (middle == 0) {
    if (::fork() == 0) {
      ::close(fds[1]);
      keeper_main(fds[0], parent);
    }
    ::_exit(0);
  }
  const int fork_error = errno;
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  ::close(fds[0]);
  if (middle < 0) {
    ::close(fds[1]);
    throw std::system_error(fork_error, std::generic_category(), "CancellableIsolate: starting the keeper");
  }
  while (::waitpid(middle, nullptr, 0) < 0 && errno == EINTR) {
  }
  keeper_fd.store(fds[1], std::memory_order_release);
  return fds[1];
}

void keeper_forget(pid_t pgid) noexcept {
  if (pgid > 0) send_keeper_message(keeper_fd.load(std::memory_order_acquire), -static_cast<KeeperMessage>(pgid));
}

}  // namespace cancellable::detail
