#include "runner/process/keeper.hpp"
#include "runner/process/worker_process.hpp"

#include "worker/protocol/keeper_messages.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <string>
#include <system_error>


namespace cancellable::detail {

namespace {

std::mutex keeper_mutex;
std::atomic<int> keeper_fd{-1};
std::filesystem::path offered_program;  // (Under keeper_mutex.)

bool executable(const std::filesystem::path& p) { return !p.empty() && ::access(p.c_str(), X_OK) == 0; }

// The program to start as the keeper: one a pool offered, else
// $CANCELLABLE_WORKER_PROGRAM, else the installed cancellable-worker.
std::filesystem::path keeper_program() {
  if (executable(offered_program)) return offered_program;
  if (const char* env = std::getenv("CANCELLABLE_WORKER_PROGRAM"); env && executable(env)) return env;
#ifdef CANCELLABLE_DEFAULT_WORKER_PROGRAM
  if (executable(CANCELLABLE_DEFAULT_WORKER_PROGRAM)) return CANCELLABLE_DEFAULT_WORKER_PROGRAM;
#endif
  return {};
}

// `program --cancellable-keeper PID` with the pipe's read end on descriptor
// 3: posix_spawn (clone(CLONE_VM | CLONE_VFORK) + exec: nothing of this
// process is copied, no pthread_atfork handler runs). The program forks
// once and exits, so the keeper is not our child; we wait for that exit.
void spawn_keeper(const std::filesystem::path& program, int read_fd) {
  std::string path = program.string(), flag = kKeeperFlag, parent = std::to_string(::getpid());
  char* argv[] = {path.data(), flag.data(), parent.data(), nullptr};
  const pid_t pid = spawn_program(argv, read_fd, kKeeperDescriptor, false);
  if (pid < 0) throw std::system_error(-pid, std::generic_category(), "starting the keeper " + path);
  int status = 0;
  pid_t waited;
  while ((waited = ::waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
  }
  // (ECHILD: SIGCHLD is ignored here, and the kernel reaped it.)
  if (waited == pid && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
    throw std::system_error(ECHILD, std::generic_category(),
                            "the keeper " + path + " did not start (a worker program calls worker_main first)");
}

// The fallback, for isolates in a program that knows no worker program: a
// double fork of this process (so that the keeper is not its child).
void fork_keeper(int read_fd, int write_fd) {
  const pid_t parent = ::getpid();
  sigset_t all;
  sigset_t previous;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &previous);
  const pid_t middle = ::fork();
  if (middle == 0) {
    if (::fork() == 0) {
      ::close(write_fd);
      run_keeper(read_fd, parent);
    }
    ::_exit(0);
  }
  const int fork_error = errno;
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (middle < 0) {
    throw std::system_error(fork_error, std::generic_category(), "CancellableIsolate: starting the keeper");
  }
  while (::waitpid(middle, nullptr, 0) < 0 && errno == EINTR) {
  }
}

}  // namespace

void offer_keeper_program(const std::filesystem::path& program) {
  std::lock_guard lock(keeper_mutex);
  if (offered_program.empty()) offered_program = program;
}

int ensure_keeper_started() {
  const int existing = keeper_fd.load(std::memory_order_acquire);
  if (existing >= 0) return existing;
  std::lock_guard lock(keeper_mutex);
  if (keeper_fd.load(std::memory_order_relaxed) >= 0) return keeper_fd.load(std::memory_order_relaxed);
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    throw std::system_error(errno, std::generic_category(), "the keeper's pipe");
  }
  // The read end does not block the keeper's drain; the write end never
  // blocks a worker or the parent (a full pipe loses a message: 16,384
  // pending ones).
  ::fcntl(fds[0], F_SETFL, O_NONBLOCK);
  ::fcntl(fds[1], F_SETFL, O_NONBLOCK);
  try {
    const auto program = keeper_program();
    if (!program.empty()) {
      spawn_keeper(program, fds[0]);
    } else {
      fork_keeper(fds[0], fds[1]);
    }
  } catch (...) {
    ::close(fds[0]);
    ::close(fds[1]);
    throw;
  }
  ::close(fds[0]);
  keeper_fd.store(fds[1], std::memory_order_release);
  return fds[1];
}

void keeper_forget(pid_t pgid) noexcept {
  if (pgid > 0) send_keeper_message(keeper_fd.load(std::memory_order_acquire), -static_cast<KeeperMessage>(pgid));
}

}  // namespace cancellable::detail
