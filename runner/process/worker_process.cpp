#include "runner/process/worker_process.hpp"

#include <sys/resource.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <cstdint>

#include "runner/process/keeper.hpp"
#include "worker/protocol/futex.hpp"

extern char** environ;

namespace cancellable::detail {

namespace {

// PIDFD_GET_INFO (Linux 6.15). glibc 2.36 does not declare it.
struct PidfdInfo {
  std::uint64_t mask;
  std::uint64_t cgroupid;
  std::uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
  std::int32_t exit_code;
};
static_assert(sizeof(PidfdInfo) == 64);
constexpr unsigned long kPidfdGetInfo = _IOWR(0xFF, 11, PidfdInfo);
constexpr std::uint64_t kPidfdInfoExit = 1ULL << 3;

}  // namespace

int open_pidfd(pid_t pid) noexcept { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

int send_signal_to_pidfd(int pidfd, int sig) noexcept {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

bool still_our_unreaped_child(int pidfd) noexcept {
  siginfo_t peek{};
  return ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &peek,
                  WEXITED | WNOHANG | WNOWAIT) == 0;
}

void signal_worker_and_group(int pidfd, pid_t pid, int sig) noexcept {
  if (pid > 0 && send_signal_to_pidfd(pidfd, 0) == 0) (void)::kill(-pid, sig);  // (never kill(-0))
  (void)send_signal_to_pidfd(pidfd, sig);
}

void kill_worker_and_group(int pidfd, pid_t pid) noexcept { signal_worker_and_group(pidfd, pid, SIGKILL); }

void ask_worker_to_stop(WorkerHeader& header, std::uint32_t run, int pidfd, pid_t pid, bool terminate) noexcept {
  header.stop.store(run, std::memory_order_release);
  futex_wake_all(header.stop);
  if (terminate) signal_worker_and_group(pidfd, pid, SIGTERM);
}

std::optional<ProcessExit> exit_from_pidfd(int pidfd) noexcept {
  // The status is recorded when the process is released, just after its
  // pidfd became readable: a few tries.
  for (int attempt = 0; attempt < 1000; ++attempt) {
    PidfdInfo info{};
    info.mask = kPidfdInfoExit;
    if (::ioctl(pidfd, kPidfdGetInfo, &info) != 0) {
      if (errno == ESRCH) {
        ::sched_yield();
        continue;
      }
      return std::nullopt;  // ENOTTY, EINVAL: not supported here
    }
    if (info.mask & kPidfdInfoExit) {
      ProcessExit exit;
      if (WIFEXITED(info.exit_code)) {
        exit.kind = ProcessExit::Kind::exited;
        exit.code = WEXITSTATUS(info.exit_code);
      } else {
        exit.kind = ProcessExit::Kind::killed;
        exit.signal = WTERMSIG(info.exit_code);
      }
      return exit;
    }
    ::sched_yield();
  }
  return std::nullopt;
}

ProcessExit exit_from_pidfd_or_unknown(int pidfd) noexcept {
  return exit_from_pidfd(pidfd).value_or(ProcessExit{ProcessExit::Kind::unknown});
}

ProcessExit exit_of(const siginfo_t& info) noexcept {
  ProcessExit exit;
  if (info.si_code == CLD_EXITED) {
    exit.kind = ProcessExit::Kind::exited;
    exit.code = info.si_status;
  } else {
    exit.kind = ProcessExit::Kind::killed;
    exit.signal = info.si_status;
  }
  return exit;
}

pid_t spawn_program(char* const argv[], int fd, int as_fd, bool own_group) noexcept {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attributes;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawnattr_init(&attributes);
  // (dup2 clears close-on-exec on the copy.)
  ::posix_spawn_file_actions_adddup2(&actions, fd, as_fd);
  ::posix_spawn_file_actions_addclosefrom_np(&actions, as_fd + 1);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  ::posix_spawnattr_setsigmask(&attributes, &none);
  ::posix_spawnattr_setsigdefault(&attributes, &all);
  short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  if (own_group) {
    ::posix_spawnattr_setpgroup(&attributes, 0);
    flags |= POSIX_SPAWN_SETPGROUP;
  }
  ::posix_spawnattr_setflags(&attributes, flags);
  pid_t pid = 0;
  const int error = ::posix_spawn(&pid, argv[0], &actions, &attributes, argv, environ);
  ::posix_spawn_file_actions_destroy(&actions);
  ::posix_spawnattr_destroy(&attributes);
  return error != 0 ? -error : pid;
}

long long cpu_seconds_used(pid_t pid) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buffer[1024];
  const ssize_t n = ::read(fd, buffer, sizeof buffer - 1);
  ::close(fd);
  if (n <= 0) return 0;
  buffer[n] = '\0';
  // The fields after the command name (which may hold spaces and parens):
  // state is the 3rd field, utime the 14th, stime the 15th.
  const char* p = std::strrchr(buffer, ')');
  if (p == nullptr) return 0;
  unsigned long long utime = 0, stime = 0;
  if (std::sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2) return 0;
  const long ticks = ::sysconf(_SC_CLK_TCK);
  return ticks > 0 ? static_cast<long long>((utime + stime) / static_cast<unsigned long long>(ticks)) : 0;
}

ReapedWorker reap_worker(int pidfd, pid_t pid, bool group_killed) noexcept {
  // A child the kernel reaped already (the host ignores SIGCHLD) no longer
  // reserves its group id: no group kill then (kill_worker_and_group killed
  // the group first, for that case).
  if (!group_killed && pid > 0 && still_our_unreaped_child(pidfd)) (void)::kill(-pid, SIGKILL);
  keeper_forget(pid);  // (before the reap, after which the group id may be reused)
  siginfo_t info{};
  rusage usage{};
  int reaped;
  // The system call itself, for its fifth argument: the child's resource
  // usage (glibc's waitid() passes none; siginfo's si_utime stays 0).
  while ((reaped = static_cast<int>(::syscall(SYS_waitid, P_PIDFD, pidfd, &info, WEXITED, &usage))) != 0 &&
         errno == EINTR) {
  }
  ReapedWorker result;
  if (reaped != 0) {
    // ECHILD: reaped by the kernel (SIGCHLD ignored) or by the host's
    // waitpid(-1). Ask the pidfd how it ended.
    result.exit = exit_from_pidfd_or_unknown(pidfd);
  } else {
    result.exit = exit_of(info);
    result.cpu_seconds = usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
                         (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1000000;
  }
  return result;
}

}  // namespace cancellable::detail
