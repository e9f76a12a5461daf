#include "worker/child_entry.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>

namespace cancellable::detail {

namespace {

std::atomic<ExitHook> exit_hook{nullptr};

void reset_signals() noexcept {
  struct sigaction action {};
  action.sa_handler = SIG_DFL;
  sigemptyset(&action.sa_mask);
  for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &action, nullptr);  // fails for KILL, STOP
  sigset_t empty;
  sigemptyset(&empty);
  ::sigprocmask(SIG_SETMASK, &empty, nullptr);
}

// Closes the inherited descriptors from `first` on.
void close_inherited_descriptors(int first) noexcept {
  if (::close_range(static_cast<unsigned>(first), ~0U, 0) == 0) return;
  const long max = ::sysconf(_SC_OPEN_MAX);
  for (long fd = first; fd < (max > 0 ? max : 1024); ++fd) ::close(static_cast<int>(fd));
}

// Moves the commit descriptor to 3 (close-on-exec, should the work exec) and
// returns it, or -1 if there is none.
int keep_commit_descriptor(int fd) noexcept {
  if (fd < 0) return -1;
  if (fd == 3) return ::fcntl(3, F_SETFD, FD_CLOEXEC) == 0 ? 3 : -1;
  return ::dup3(fd, 3, O_CLOEXEC) == 3 ? 3 : -1;
}

// Address space mapped now, in bytes (what the child inherited).
unsigned long long mapped_bytes() noexcept {
  const int fd = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buffer[128] = {};
  const ssize_t n = ::read(fd, buffer, sizeof buffer - 1);
  ::close(fd);
  if (n <= 0) return 0;
  return std::strtoull(buffer, nullptr, 10) * static_cast<unsigned long long>(::sysconf(_SC_PAGESIZE));
}

void apply_limits(const ChildSetup& setup) noexcept {
  if (setup.limits.memory_limit_bytes) {
    const rlim_t limit = mapped_bytes() + *setup.limits.memory_limit_bytes;
    const rlimit as{limit, limit};
    ::setrlimit(RLIMIT_AS, &as);
  }
  if (setup.cpu_time_limit) {
    const auto seconds = static_cast<rlim_t>(setup.cpu_time_limit->count());
    // SIGXCPU at the limit; SIGKILL one second later if it is ignored.
    const rlimit cpu{seconds, seconds + 1};
    ::setrlimit(RLIMIT_CPU, &cpu);
  }
}

}  // namespace

ControlBlock*& progress_block_of_this_thread() noexcept {
  thread_local ControlBlock* block = nullptr;
  return block;
}

void run_child(const ChildSetup& setup) noexcept {
  ::setpgid(0, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  // The parent may have died before PR_SET_PDEATHSIG took effect.
  if (::getppid() != setup.parent_pid) ::_exit(kExitParentGone);
  reset_signals();
  const int commit_fd = keep_commit_descriptor(setup.commit_fd);
  close_inherited_descriptors(commit_fd < 0 ? 3 : 4);
  apply_limits(setup);
  progress_block_of_this_thread() = setup.block;
  {
    ChildChannelImpl channel(setup.block, setup.limits);
    try {
      (*setup.body)(channel);
    } catch (...) {
      channel.commit_current_exception();
    }
  }
  // The parent may take the outcome now: nothing here writes to shared
  // memory any more.
  if (commit_fd >= 0) ::eventfd_write(commit_fd, 1);
  if (ExitHook hook = exit_hook.load(std::memory_order_acquire)) hook();
  ::_exit(0);
}

void set_child_exit_hook(ExitHook hook) noexcept { exit_hook.store(hook, std::memory_order_release); }

void report_progress_impl(std::uint64_t done, std::uint64_t total, const char* stage,
                          std::size_t stage_size) noexcept {
  if (ControlBlock* block = progress_block_of_this_thread()) {
    block->write_progress(done, total, stage, stage_size);
  }
}

}  // namespace cancellable::detail
