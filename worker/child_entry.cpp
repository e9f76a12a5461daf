#include "worker/child_entry.hpp"

#include "worker/protocol/keeper_messages.hpp"
#include "worker/test_seams.hpp"
#include "worker/work_stop.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <malloc.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>

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

std::atomic<bool> worker_process{false};

[[noreturn]] void setup_failed(ControlBlock* block, SetupStep step, int error) noexcept {
  report_setup_failure(block, step, error);
  ::_exit(kExitSetupFailed);
}

// Waits until the parent holds this process's pidfd (see ControlBlock). The
// parent opens the gate right after fork returns, so this rarely sleeps.
void wait_at_start_gate(ControlBlock* block, pid_t parent) noexcept {
  auto& gate = block->start_gate;
  std::uint32_t expected = ControlBlock::kGateClosed;
  if (!gate.compare_exchange_strong(expected, ControlBlock::kGateWaiting, std::memory_order_acq_rel)) {
    return;  // open already
  }
  while (gate.load(std::memory_order_acquire) != ControlBlock::kGateOpen) {
    // Shared memory: no FUTEX_PRIVATE_FLAG. A bounded sleep re-checks that
    // the parent still exists (PR_SET_PDEATHSIG also covers its death).
    timespec timeout{1, 0};
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&gate), FUTEX_WAIT,
              ControlBlock::kGateWaiting, &timeout, nullptr, 0);
    if (::getppid() != parent) ::_exit(kExitParentGone);
  }
}

// Data segment size now, in bytes (VmData: what RLIMIT_DATA counts), or -1.
long long data_bytes() noexcept {
  const int fd = ::open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buffer[4096];
  ssize_t n = ::read(fd, buffer, sizeof buffer - 1);
  ::close(fd);
  if (n <= 0) return -1;
  buffer[n] = '\0';
  // Parsed by hand: no locale, no stdio.
  for (const char* line = buffer; line && *line; ) {
    if (line[0] == 'V' && line[1] == 'm' && line[2] == 'D' && line[3] == 'a' && line[4] == 't' &&
        line[5] == 'a' && line[6] == ':') {
      long long kib = 0;
      const char* p = line + 7;
      while (*p == ' ' || *p == '\t') ++p;
      while (*p >= '0' && *p <= '9') kib = kib * 10 + (*p++ - '0');
      return kib * 1024;
    }
    const char* next = line;
    while (*next && *next != '\n') ++next;
    line = *next ? next + 1 : nullptr;
  }
  return -1;
}

}  // namespace

int limit_data_growth(std::size_t extra_bytes) noexcept {
  ::mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  ::malloc_trim(0);
  const long long inherited = data_bytes();
  if (inherited < 0) return errno ? errno : EIO;
  const auto base = static_cast<rlim_t>(inherited);
  const rlim_t limit = extra_bytes > RLIM_INFINITY - base ? RLIM_INFINITY : base + extra_bytes;
  const rlimit data{limit, limit};
  return ::setrlimit(RLIMIT_DATA, &data) != 0 ? errno : 0;
}

namespace {

// RLIMIT_DATA counts what the work can make writable and private: the heap,
// anonymous mappings, thread stacks, including memory malloc takes inside
// arenas it reserved before the fork (RLIMIT_AS would not count those).
// Before measuring, free memory at the top of the heap goes back to the
// kernel and large allocations are made to map memory of their own, so that
// the limit counts them; free memory the process already had mapped inside
// its heap can still be reused uncounted.
void apply_limits(const ChildSetup& setup) noexcept {
  if (setup.memory_limit_bytes) {
    if (const int error = limit_data_growth(*setup.memory_limit_bytes)) {
      setup_failed(setup.block, SetupStep::memory_limit, error);
    }
  }
  if (setup.cpu_time_limit) {
    const auto seconds = static_cast<rlim_t>(setup.cpu_time_limit->count());
    // SIGXCPU at the limit; SIGKILL one second later if it is ignored.
    const rlimit cpu{seconds, seconds + 1};
    if (::setrlimit(RLIMIT_CPU, &cpu) != 0) setup_failed(setup.block, SetupStep::cpu_limit, errno);
  }
}

}  // namespace

void report_setup_failure(WorkerHeader* header, SetupStep step, int error) noexcept {
  header->setup_errno.store(error, std::memory_order_relaxed);
  header->setup_failed_step.store(static_cast<std::uint32_t>(step), std::memory_order_release);
}

bool in_isolate_worker() noexcept { return worker_process.load(std::memory_order_relaxed); }

WorkerHeader*& progress_block_of_this_thread() noexcept {
  thread_local WorkerHeader* block = nullptr;
  return block;
}

namespace {
std::atomic<WorkerHeader*> process_header{nullptr};
}  // namespace

void set_worker_process_header(WorkerHeader* header) noexcept { process_header.store(header, std::memory_order_release); }

void run_child(const ChildSetup& setup) noexcept {
  worker_process.store(true, std::memory_order_relaxed);
  if (::setpgid(0, 0) != 0 && ::getpgrp() != ::getpid()) {
    setup_failed(setup.block, SetupStep::process_group, errno);
  }
  keeper_register(setup.keeper_fd, ::getpid());
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) setup_failed(setup.block, SetupStep::death_signal, errno);
  // The parent may have died before PR_SET_PDEATHSIG took effect.
  if (::getppid() != setup.parent_pid) ::_exit(kExitParentGone);
  reset_signals();
  const int commit_fd = keep_commit_descriptor(setup.commit_fd);
  if (setup.commit_fd >= 0 && commit_fd < 0) setup_failed(setup.block, SetupStep::descriptors, errno);
  close_inherited_descriptors(commit_fd < 0 ? 3 : 4);
  wait_at_start_gate(setup.block, setup.parent_pid);
  apply_limits(setup);
  progress_block_of_this_thread() = setup.block;
  set_worker_process_header(setup.block);  // (for the work's own threads)
  begin_process_work(setup.block, kIsolateRun);  // (work_stop_token())
  ChildChannelImpl& channel = *setup.channel;
  try {
    (*setup.body)(channel);
  } catch (...) {
    channel.commit_current_exception();
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
  WorkerHeader* header = progress_block_of_this_thread();
  if (!header) header = process_header.load(std::memory_order_acquire);
  if (header) header->write_progress(done, total, stage, stage_size);
}

}  // namespace cancellable::detail
