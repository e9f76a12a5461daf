// Helpers for the isolate tests (and the benchmarks): what this process
// holds (children, fds, mappings, shared memory objects), waiting for a
// process to be gone, and a gate that holds workers.
#pragma once

#include <dirent.h>
#include <malloc.h>
#include <linux/futex.h>
#include <poll.h>
#include <linux/capability.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cancellable/future.hpp"

namespace process_support {

// Gives up CAP_SYS_RESOURCE (without it a process cannot raise a hard limit)
// and lowers the hard RLIMIT_DATA to 1 TiB (room for this process): a
// worker asked for a larger memory limit then fails at its setrlimit.
// False if either step failed.
inline bool cap_data_limit_for_good() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capget, &header, data) != 0) return false;
  data[CAP_SYS_RESOURCE / 32].effective &= ~(1u << (CAP_SYS_RESOURCE % 32));
  data[CAP_SYS_RESOURCE / 32].permitted &= ~(1u << (CAP_SYS_RESOURCE % 32));
  data[CAP_SYS_RESOURCE / 32].inheritable &= ~(1u << (CAP_SYS_RESOURCE % 32));
  if (::syscall(SYS_capset, &header, data) != 0) return false;
  rlimit data_limit{};
  ::getrlimit(RLIMIT_DATA, &data_limit);
  data_limit.rlim_cur = data_limit.rlim_max = rlim_t{1} << 40;
  return ::setrlimit(RLIMIT_DATA, &data_limit) == 0;
}

// Waits (up to a minute) until pred() holds: for threads that end on their
// own, and for the kernel to drop a joined thread from /proc/self/task,
// which it may do a little after pthread_join returned.
template <class Pred>
bool eventually(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

// The names of this process's threads (the library names its own:
// "cancel-reaper", "cancel-spawner", "cancel-driver",
// "cancellable-io", ...).
inline std::vector<std::string> thread_name_list() {
  std::vector<std::string> names;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::getline(comm, names.emplace_back());
  }
  return names;
}
inline int threads_named(const std::string& wanted) {
  auto names = thread_name_list();
  return static_cast<int>(std::count(names.begin(), names.end(), wanted));
}

// The fields of /proc/<pid>/stat after the command name.
struct ProcStat {
  char state = 0;  // 'R', 'S', 'T', 'Z', ...
  long ppid = 0;
  long pgrp = 0;
  long session = 0;
};

// Those of pid, or nothing if it is gone.
inline std::optional<ProcStat> proc_stat(long pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return std::nullopt;
  const auto close = line.rfind(')');
  ProcStat out;
  if (close == std::string::npos ||
      std::sscanf(line.c_str() + close + 1, " %c %ld %ld %ld", &out.state, &out.ppid, &out.pgrp, &out.session) != 4) {
    return std::nullopt;
  }
  return out;
}

// Processes whose parent is this process, in any state (zombies included),
// other than those in except.
inline int count_children_except(const std::vector<pid_t>& except) {
  const pid_t me = ::getpid();
  int count = 0;
  DIR* proc = ::opendir("/proc");
  if (!proc) return 0;
  while (dirent* entry = ::readdir(proc)) {
    const long pid = std::strtol(entry->d_name, nullptr, 10);
    if (pid <= 0) continue;
    bool skip = false;
    for (const pid_t e : except) skip = skip || e == pid;
    if (skip) continue;
    const auto stat = proc_stat(pid);
    if (stat && stat->ppid == me) ++count;
  }
  ::closedir(proc);
  return count;
}

// ... other than `except`.
inline int count_children(pid_t except = 0) { return count_children_except({except}); }

inline int count_entries(const char* path, const std::string& prefix = {}) {
  int count = 0;
  DIR* dir = ::opendir(path);
  if (!dir) return -1;
  while (dirent* entry = ::readdir(dir)) {
    const std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    if (name.rfind(prefix, 0) == 0) ++count;
  }
  ::closedir(dir);
  return count;
}

inline int count_fds() { return count_entries("/proc/self/fd"); }

inline int count_mappings() {
  std::ifstream maps("/proc/self/maps");
  int count = 0;
  std::string line;
  while (std::getline(maps, line)) ++count;
  return count;
}

// Mappings whose path names `name` (e.g. a memfd's "memfd:<name>").
inline int count_mappings_named(const std::string& name) {
  std::ifstream maps("/proc/self/maps");
  int count = 0;
  std::string line;
  while (std::getline(maps, line)) count += line.find(name) != std::string::npos;
  return count;
}

// Whether the whole mapping count says anything: a sanitizer's runtime maps
// and splits regions of its own (shadow, metadata) as the program runs.
inline constexpr bool mapping_count_is_ours() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return false;
#else
  return true;
#endif
}

// Bytes of heap in use (glibc malloc), or nothing under a sanitizer, whose
// allocator glibc does not see (LeakSanitizer checks leaks there).
inline std::optional<std::size_t> heap_in_use() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return std::nullopt;
#else
  return ::mallinfo2().uordblks;
#endif
}

// Result objects this process has in /dev/shm.
inline int count_result_shm() {
  return count_entries("/dev/shm", "cancellable." + std::to_string(::getpid()) + ".");
}

// Entries of /dev/shm, but not other processes' isolate results
// ("cancellable.<their pid>."): tests run in parallel (ctest -j), and
// another test's isolates come and go there meanwhile.
inline int count_shm_but_other_tests() {
  const std::string mine = "cancellable." + std::to_string(::getpid()) + ".";
  int count = 0;
  DIR* dir = ::opendir("/dev/shm");
  if (!dir) return -1;
  while (dirent* entry = ::readdir(dir)) {
    const std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    if (name.rfind("cancellable.", 0) != 0 || name.rfind(mine, 0) == 0) ++count;
  }
  ::closedir(dir);
  return count;
}

// True once the process is gone (exited, whoever reaps it), false if it is
// still there after the timeout.
inline bool wait_gone(pid_t pid, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return errno == ESRCH;
  pollfd p{fd, POLLIN, 0};
  const int ready = ::poll(&p, 1, static_cast<int>(timeout.count()));
  ::close(fd);
  return ready == 1;
}

// Waits for every future, with a deadline for each.
template <class T>
bool wait_all(const std::vector<cancellable::Future<T>>& futures,
              std::chrono::seconds timeout = std::chrono::seconds(30)) {
  for (const auto& f : futures) {
    if (f.wait_for(timeout) != std::future_status::ready) return false;
  }
  return true;
}

// A gate in shared memory that forked workers wait at until the test opens
// it (a futex: no polling). Shut when created. A watchdog thread opens it
// after the timeout, so that a failing test fails instead of hanging;
// opened_by_watchdog() tells.
class SharedGate {
 public:
  explicit SharedGate(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    void* p = ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("SharedGate: mmap failed");
    shared_ = new (p) Shared();
    watchdog_ = std::thread([this, timeout] {
      std::unique_lock lock(mutex_);
      if (!cv_.wait_for(lock, timeout, [this] { return opened_; })) {
        by_watchdog_ = true;
        open_locked();
      }
    });
  }
  SharedGate(const SharedGate&) = delete;
  SharedGate& operator=(const SharedGate&) = delete;
  ~SharedGate() {
    open();
    watchdog_.join();
    ::munmap(shared_, sizeof(Shared));  // (a worker keeps its own mapping)
  }

  // In a worker: blocks until the gate is open.
  void wait() const noexcept {
    while (shared_->open.load(std::memory_order_acquire) == 0) {
      ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&shared_->open), FUTEX_WAIT, 0, nullptr, nullptr, 0);
    }
  }
  void open() {
    std::lock_guard lock(mutex_);
    open_locked();
  }
  bool opened_by_watchdog() const {
    std::lock_guard lock(mutex_);
    return by_watchdog_;
  }

 private:
  struct Shared {
    std::atomic<std::uint32_t> open{0};
  };
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));

  void open_locked() {
    if (opened_) return;
    opened_ = true;
    shared_->open.store(1, std::memory_order_release);
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&shared_->open), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
    cv_.notify_all();
  }

  Shared* shared_ = nullptr;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool opened_ = false;
  bool by_watchdog_ = false;
  std::thread watchdog_;
};

}  // namespace process_support
