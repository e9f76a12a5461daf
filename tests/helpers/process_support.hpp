// Helpers for the isolate tests: what this process holds (children, fds,
// mappings, shared memory objects) and waiting for a process to be gone.
#pragma once

#include <dirent.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "cancellable/future.hpp"

namespace process_support {

// Processes whose parent is this process, in any state (zombies included).
inline int count_children() {
  const pid_t me = ::getpid();
  int count = 0;
  DIR* proc = ::opendir("/proc");
  while (dirent* entry = ::readdir(proc)) {
    const long pid = std::strtol(entry->d_name, nullptr, 10);
    if (pid <= 0) continue;
    std::ifstream stat("/proc/" + std::string(entry->d_name) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    const auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    long ppid = 0;
    if (std::sscanf(line.c_str() + close + 1, " %c %ld", &state, &ppid) == 2 && ppid == me) ++count;
  }
  ::closedir(proc);
  return count;
}

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

// Result objects this process has in /dev/shm.
inline int count_result_shm() {
  return count_entries("/dev/shm", "cancellable." + std::to_string(::getpid()) + ".");
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

}  // namespace process_support
