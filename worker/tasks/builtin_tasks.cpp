// The built-in tasks (include/cancellable/builtin_tasks.hpp) but the JSON
// ones (json_tasks.cpp, built with the json component).
#include "cancellable/builtin_tasks.hpp"
#include "cancellable/isolate.hpp"
#include "cancellable/stop_policy.hpp"

#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <system_error>
#include <memory>
#include <new>
#include <stdexcept>
#include <thread>


namespace cancellable::builtin {
namespace {

int empty_task() { return 0; }

int pid_task() { return static_cast<int>(::getpid()); }

std::string echo_task(std::string text) { return text; }

int spin_task() {
  report_progress(0, 0, "spinning");  // (the caller can tell it runs)
  for (;;) {
    asm volatile("" ::: "memory");  // a loop the compiler must keep
  }
}

std::int64_t sleep_ms_task(std::int64_t ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

int crash_task(int signal) {
  ::signal(signal, SIG_DFL);
  ::raise(signal);
  return 0;
}

int exit_code_task(int code) { ::_exit(code); }

std::uint64_t allocate_task(std::uint64_t bytes) {
  // malloc, not new: a failed allocation is std::bad_alloc here under
  // AddressSanitizer too (its operator new aborts instead of throwing).
  static std::vector<void*> kept;
  char* block = static_cast<char*>(std::malloc(static_cast<std::size_t>(bytes)));
  if (block == nullptr) throw std::bad_alloc();
  for (std::uint64_t at = 0; at < bytes; at += 4096) block[at] = 1;
  kept.push_back(block);
  return bytes;
}

int fail_task(std::string message) { throw std::runtime_error(message); }

std::vector<int> descriptors_task() {
  std::vector<int> fds;
  DIR* dir = ::opendir("/proc/self/fd");
  if (!dir) throw std::runtime_error("cannot list /proc/self/fd");
  const int own = ::dirfd(dir);
  while (const dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    const int fd = std::atoi(entry->d_name);
    if (fd != own) fds.push_back(fd);
  }
  ::closedir(dir);
  std::sort(fds.begin(), fds.end());
  return fds;
}

int spawn_child_and_spin_task(std::string pid_file) {
  const pid_t child = ::fork();
  if (child < 0) throw std::runtime_error("fork failed");
  if (child == 0) {
    for (;;) ::pause();
  }
  {
    std::ofstream out(pid_file + ".tmp");
    out << child << "\n";
  }
  if (std::rename((pid_file + ".tmp").c_str(), pid_file.c_str()) != 0) throw std::runtime_error("rename failed");
  return spin_task();
}

int wait_for_stop_task() {
  std::mutex mutex;
  std::condition_variable_any cv;
  std::unique_lock lock(mutex);
  const CancellationToken asked = work_stop_token();
  report_progress(0, 1, "waiting");  // (the caller can tell it runs)
  cv.wait(lock, asked.stop_token(), [] { return false; });
  return 0;
}

std::int64_t identity_task(std::int64_t x) { return x; }

}  // namespace

CANCELLABLE_TASK(empty, empty_task);
CANCELLABLE_TASK(identity, identity_task);
CANCELLABLE_TASK(pid, pid_task);
CANCELLABLE_TASK(echo, echo_task);
CANCELLABLE_TASK(spin, spin_task);
CANCELLABLE_TASK(sleep_ms, sleep_ms_task);
CANCELLABLE_TASK(crash, crash_task);
CANCELLABLE_TASK(exit_code, exit_code_task);
CANCELLABLE_TASK(allocate, allocate_task);
CANCELLABLE_TASK(fail, fail_task);
CANCELLABLE_TASK(descriptors, descriptors_task);
CANCELLABLE_TASK(spawn_child_and_spin, spawn_child_and_spin_task);
CANCELLABLE_TASK(wait_for_stop, wait_for_stop_task);

}  // namespace cancellable::builtin
