// A parent for the tests that need a process of their own; also a worker
// program (it calls worker_main) with one task of its own.
//
// `--parent-death process|pool PIDS`: runs a task that starts a child and
// spins with that backend (CancellableIsolate::run(task, ...): a fork
// isolate, or a pool of this program with one standby), writes the
// process's children (its workers) to the file PIDS (the task's child's
// pid to PIDS.child), and waits to be killed: the parent-death test, one
// body for both backends.
//
// `--fresh-process WORKER OUT`: in a process that has started nothing yet
// (no keeper), counts this process's pthread_atfork prepare calls while a
// pool is made and runs a task, finds the keeper, and forks once to see
// whether the child inherited the worker's memory; writes
// "atfork N\nkeeper EXE\ninherited 0|1\n" to OUT.
//
// `--setup-failure WORKER OUT`: gives up CAP_SYS_RESOURCE and lowers the
// hard RLIMIT_DATA, then asks a fork isolate and a pool for a memory limit
// above it: each worker's setrlimit fails. Writes "isolate <error>\n" and
// "pool <error>\n" to OUT (or "... succeeded").
#include <linux/capability.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>

#include "cancellable/builtin_tasks.hpp"
#include "cancellable/isolate.hpp"
#include "cancellable/pool.hpp"
#include "support/process_support.hpp"

namespace {

std::atomic<int> atfork_prepares{0};

// The keeper of this process: the one whose command line is
// "... --cancellable-keeper <our pid>".
std::string keeper_exe() {
  const std::string wanted = std::string("--cancellable-keeper") + '\0' + std::to_string(::getpid()) + '\0';
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    std::ifstream in(entry.path() / "cmdline", std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmdline.find(wanted) == std::string::npos) continue;
    std::error_code ec;
    auto exe = std::filesystem::read_symlink(entry.path() / "exe", ec);
    return ec ? "(unreadable)" : exe.string();
  }
  return "(none)";
}

int fresh_process(const char* worker, const char* out_path) {
  ::pthread_atfork(+[] { ++atfork_prepares; }, nullptr, nullptr);
  int prepares = 0;
  std::string keeper;
  {
    cancellable::PoolOptions options;
    options.worker_program = worker;
    options.size = 1;
    options.standby = 0;
    cancellable::WorkerPool pool(options);
    (void)pool.run(cancellable::builtin::pid).get();
    prepares = atfork_prepares.load();
    keeper = keeper_exe();
    // A fork of ours (an isolate's, say) must not map the worker's memory.
    const pid_t child = ::fork();
    if (child == 0) {
      std::ifstream maps("/proc/self/maps");
      std::string line;
      while (std::getline(maps, line))
        if (line.find("cancellable-pool-worker") != std::string::npos) ::_exit(1);
      ::_exit(0);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    std::ofstream(out_path) << "atfork " << prepares << "\nkeeper " << keeper << "\ninherited "
                            << (WIFEXITED(status) ? WEXITSTATUS(status) : 2) << "\n";
  }
  return 0;
}

// With SIGCHLD ignored (the kernel reaps children at once): a task that
// started a child (its pid in PIDFILE), cancelled; then PIDFILE.cancelled,
// and a wait to be killed, the pool still up.
int sigchld_ignored(const char* worker, const std::string& pid_file) {
  ::signal(SIGCHLD, SIG_IGN);
  cancellable::PoolOptions options;
  options.worker_program = worker;
  options.size = 1;
  options.standby = 0;
  cancellable::WorkerPool pool(options);
  cancellable::CancellationToken token;
  auto running = pool.run(cancellable::builtin::spawn_child_and_spin, pid_file, token);
  while (!std::filesystem::exists(pid_file)) {
  }
  token.cancel();
  std::ofstream(pid_file + ".cancelled") << "1\n";
  for (;;) ::pause();
}

}  // namespace

int open_descriptors() { return process_support::count_fds(); }
int children() { return process_support::count_children(); }

// Makes pools under ever higher RLIMIT_NOFILE limits, from too low to
// enough; after each (made and destroyed, or failed) nothing may be left:
// no descriptor, no child. Writes "failed F made M leaks L" (and each leak).
int low_descriptors(const char* worker, const char* out_path) {
  cancellable::PoolOptions options;
  options.worker_program = worker;
  options.size = 2;
  options.standby = 1;
  { cancellable::WorkerPool warm(options); }  // (The keeper and the libraries' own descriptors, once.)
  std::ofstream out(out_path);
  const int base = open_descriptors();
  rlimit original{};
  ::getrlimit(RLIMIT_NOFILE, &original);
  int failed = 0, made = 0, leaks = 0;
  for (int extra = 0; extra <= 40; ++extra) {
    rlimit low = original;
    low.rlim_cur = static_cast<rlim_t>(base + extra);
    ::setrlimit(RLIMIT_NOFILE, &low);
    try {
      cancellable::WorkerPool pool(options);
      ++made;
    } catch (const std::exception&) {
      ++failed;
    }
    ::setrlimit(RLIMIT_NOFILE, &original);
    const int fds = open_descriptors(), kids = children();
    if (fds != base || kids != 0) {
      ++leaks;
      out << "leak at limit base+" << extra << ": " << fds - base << " descriptors, " << kids << " children\n";
    }
  }
  out << "failed " << failed << " made " << made << " leaks " << leaks << "\n";
  return 0;
}

int setup_failure(const char* worker, const char* out_path) {
  if (!process_support::cap_data_limit_for_good()) return 2;
  const std::size_t too_much = std::size_t{1} << 41;  // more than the hard limit allows
  std::ofstream out(out_path);
  cancellable::IsolateOptions isolate;
  isolate.backend = cancellable::Backend::process;
  isolate.memory_limit_bytes = too_much;
  try {
    (void)cancellable::CancellableIsolate::run([] { return 1; }, cancellable::CancellationToken::none(), isolate)
        .get();
    out << "isolate succeeded\n";
  } catch (const std::exception& e) {
    out << "isolate " << e.what() << "\n";
  }
  cancellable::PoolOptions pool;
  pool.worker_program = worker;
  pool.size = 1;
  pool.standby = 0;
  pool.memory_limit_bytes = too_much;
  try {
    cancellable::WorkerPool failing(pool);
    out << "pool succeeded\n";
  } catch (const std::exception& e) {
    out << "pool " << e.what() << "\n";
  }
  return 0;
}

// Starts a child that sleeps for ever (its pid in pid_file), then spins.
int start_child_and_spin(std::string pid_file) {
  const pid_t child = ::fork();
  if (child < 0) throw std::runtime_error("fork failed");
  if (child == 0) {
    for (;;) ::pause();
  }
  std::ofstream(pid_file + ".tmp") << child << "\n";
  std::filesystem::rename(pid_file + ".tmp", pid_file);
  for (;;) ::pause();
}
constexpr cancellable::Task<int(std::string)> start_child_and_spin_task{"helper.start_child_and_spin"};
CANCELLABLE_TASK(start_child_and_spin_task, start_child_and_spin);

int parent_death(const std::string& backend, const std::string& pids) {
  cancellable::IsolateOptions options;
  std::optional<cancellable::WorkerPool> pool;
  if (backend == "pool") {
    cancellable::PoolOptions pool_options;
    pool_options.worker_program = std::filesystem::read_symlink("/proc/self/exe");
    pool_options.size = 1;
    pool_options.standby = 1;
    pool.emplace(pool_options);
    options.backend = cancellable::Backend::pool;
    options.pool = &*pool;
  } else if (backend == "process") {
    options.backend = cancellable::Backend::process;
  } else {
    return 2;
  }
  auto spinning = cancellable::CancellableIsolate::run(start_child_and_spin_task, pids + ".child",
                                                       cancellable::CancellationToken::none(), options);
  while (!std::filesystem::exists(pids + ".child")) {
  }
  {
    std::ofstream out(pids + ".tmp");
    // (Each thread has its own list: a pool's workers are its spawner's.)
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
      std::ifstream children(task.path() / "children");
      for (long pid = 0; children >> pid;) out << pid << "\n";
    }
  }
  std::filesystem::rename(pids + ".tmp", pids);
  for (;;) ::pause();
}

int main(int argc, char** argv) {
  cancellable::worker_main(argc, argv);
  if (argc == 4 && std::strcmp(argv[1], "--parent-death") == 0) return parent_death(argv[2], argv[3]);
  if (argc == 4 && std::strcmp(argv[1], "--setup-failure") == 0) return setup_failure(argv[2], argv[3]);
  if (argc == 4 && std::strcmp(argv[1], "--fresh-process") == 0) return fresh_process(argv[2], argv[3]);
  if (argc == 4 && std::strcmp(argv[1], "--low-descriptors") == 0) return low_descriptors(argv[2], argv[3]);
  if (argc == 4 && std::strcmp(argv[1], "--sigchld-ignored") == 0) return sigchld_ignored(argv[2], argv[3]);
  return 2;
}
