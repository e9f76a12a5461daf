// Helper for tests that need a process of their own.
//
//   isolate_parent_helper
//       starts an isolate that runs for ever, prints the isolate's process
//       id, and waits to be killed (the parent-death test).
//   isolate_parent_helper descendants FIFO
//       starts an isolate whose work starts a child and, through a process
//       that exits at once, a grandchild (both sleep for ever, in the
//       worker's process group), writes their pids to FIFO, one per line,
//       then runs for ever; waits to be killed (the descendants test).
//   isolate_parent_helper setup-failure
//       drops CAP_SYS_RESOURCE and lowers the hard RLIMIT_DATA, then runs an
//       isolate whose memory limit needs more: the worker's setrlimit fails.
//       Prints "failed <what>" or "returned".
//   isolate_parent_helper nofile N
//       lowers RLIMIT_NOFILE so that only N descriptors are free, starts an
//       isolate that runs for ever, and prints one line:
//         "started" (it ran: then it is cancelled), "failed <what>" (the
//         future failed), or "threw <what>" (spawn threw);
//       then "children <n>": processes of this one left once the run's
//       exited() completed (0 unless a worker was left unsupervised).
#include <dirent.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "cancellable/cancellable_completer.hpp"
#include "cancellable/isolate.hpp"
#include "cancellable/signal_cancellation_token.hpp"
#include "support/process_support.hpp"

namespace {

int highest_open_fd() {
  int highest = 2;
  DIR* dir = ::opendir("/proc/self/fd");
  if (!dir) return highest;
  while (dirent* entry = ::readdir(dir)) {
    const int fd = std::atoi(entry->d_name);
    if (fd > highest) highest = fd;
  }
  ::closedir(dir);
  return highest;
}

int run_out_of_descriptors(int free_descriptors) {
  using namespace cancellable;
  // Every number up to the highest open descriptor is taken (gaps filled
  // with /dev/null), then the limit lets exactly free_descriptors more open.
  const int highest = highest_open_fd();
  rlimit lowered{};
  ::getrlimit(RLIMIT_NOFILE, &lowered);
  lowered.rlim_cur = static_cast<rlim_t>(highest + 1);
  if (::setrlimit(RLIMIT_NOFILE, &lowered) != 0) return 2;
  while (::open("/dev/null", O_RDONLY | O_CLOEXEC) >= 0) {
  }
  lowered.rlim_cur = static_cast<rlim_t>(highest + 1 + free_descriptors);
  if (::setrlimit(RLIMIT_NOFILE, &lowered) != 0) return 2;
  CancellationToken token;
  IsolateOptions options;
  options.backend = Backend::process;
  std::string outcome;
  Future<ProcessExit> exited = make_ready_future(ProcessExit{});
  try {
    auto isolate = CancellableIsolate::spawn([] {
      for (;;) ::pause();
      return 0;
    }, token, options);
    exited = isolate.exited();
    if (isolate.future().wait_for(std::chrono::milliseconds(0)) == std::future_status::ready) {
      try {
        isolate.future().get();
        outcome = "returned";
      } catch (const std::exception& e) {
        outcome = std::string("failed ") + e.what();
      }
    } else {
      outcome = "started";
      token.cancel();
    }
  } catch (const std::exception& e) {
    outcome = std::string("threw ") + e.what();
  }
  // Raised again so that counting children can open /proc.
  lowered.rlim_cur = lowered.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &lowered);
  const bool exited_in_time = exited.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
  std::printf("%s\nchildren %d\nexited %s\n", outcome.c_str(), process_support::count_children(),
              exited_in_time ? "yes" : "no");
  return 0;
}

}  // namespace

[[noreturn]] void start_descendants(const std::string& fifo) {
  auto isolate = cancellable::CancellableIsolate::spawn([fifo] {
    const int out = ::open(fifo.c_str(), O_WRONLY | O_CLOEXEC);
    const pid_t child = ::fork();
    if (child == 0) {
      for (;;) ::pause();
    }
    const pid_t middle = ::fork();
    if (middle == 0) {
      const pid_t grandchild = ::fork();
      if (grandchild == 0) {
        for (;;) ::pause();
      }
      const std::string line = std::to_string(grandchild) + "\n";
      (void)!::write(out, line.data(), line.size());
      ::_exit(0);
    }
    ::waitpid(middle, nullptr, 0);
    const std::string line = std::to_string(child) + "\n";
    (void)!::write(out, line.data(), line.size());
    ::close(out);
    for (;;) ::pause();
    return 0;
  });
  for (;;) ::pause();
}

int setup_failure() {
  if (!process_support::cap_data_limit_for_good()) return 2;
  cancellable::IsolateOptions options;
  options.memory_limit_bytes = std::size_t{1} << 41;  // more than the hard limit allows
  auto f = cancellable::CancellableIsolate::run([] { return 1; }, cancellable::CancellationToken::none(),
                                                options);
  try {
    f.get();
    std::printf("returned\n");
  } catch (const std::exception& e) {
    std::printf("failed %s\n", e.what());
  }
  return 0;
}

// A fresh process (the signal thread of a forked copy would be missing):
// the first SIGTERM cancels a SignalCancellationToken, the second ends the
// process by the default action. Exit codes 3, 4 and 5 say what went wrong.
int second_signal() {
  cancellable::SignalOptions options;
  options.signals = {SIGTERM};
  cancellable::SignalCancellationToken token(options);
  cancellable::CancellableCompleter<int> completer(token);
  ::kill(::getpid(), SIGTERM);
  if (completer.future().wait_for(std::chrono::seconds(30)) != std::future_status::ready) return 3;
  if (token.signal() != SIGTERM) return 4;
  // The default action ends the process; a future that nothing completes
  // gives it a deadline.
  cancellable::CancellableCompleter<int> never(cancellable::CancellationToken::none());
  ::kill(::getpid(), SIGTERM);
  (void)never.future().wait_for(std::chrono::seconds(30));
  return 5;
}

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "second-signal") == 0) return second_signal();
  if (argc == 2 && std::strcmp(argv[1], "setup-failure") == 0) return setup_failure();
  if (argc == 3 && std::strcmp(argv[1], "nofile") == 0) return run_out_of_descriptors(std::atoi(argv[2]));
  if (argc == 3 && std::strcmp(argv[1], "descendants") == 0) start_descendants(argv[2]);
  auto isolate = cancellable::CancellableIsolate::spawn([] {
    for (;;) ::pause();
    return 0;
  });
  std::printf("%d\n", static_cast<int>(isolate.pid()));
  std::fflush(stdout);
  for (;;) ::pause();
}
