// cancellable-cli-bench: how long the `cancellable` command takes to exit
// after Ctrl-C (SIGINT) with the thread backend, from kill() to the parent's
// waitpid() returning.
//
//   cancellable-cli-bench [--quick | --samples N] [--json] [--cli PATH]
//
// Rows:
//   interrupt_in_madvise: the parse thread is mapping in a 1 GB (sparse)
//     file, 64 MiB per madvise call; SIGINT is sent once the progress line
//     (on a pseudo-terminal) reports the first 64 MiB, so the thread is
//     inside the kernel's memory map when the signal comes.
//   interrupt_in_read (baseline): the parse thread waits in read() on a FIFO
//     that never gets data; nothing is mapped.
//   message_in_madvise: in the same samples as interrupt_in_madvise, from
//     kill() to the command's "interrupted" message on the terminal.
// All are measured interleaved, in the same run.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/measure.hpp"
#include "bench/scenarios.hpp"

extern char** environ;

namespace {

using namespace cancellable::bench;

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

// The command with stderr on a new pseudo-terminal (so that it draws its
// progress line) and stdout to /dev/null.
struct Command {
  explicit Command(std::vector<std::string> args) {
    master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0) fail("posix_openpt");
    const int terminal = ::open(::ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (terminal < 0) fail("open pty");
    posix_spawn_file_actions_t actions;
    ::posix_spawn_file_actions_init(&actions);
    ::posix_spawn_file_actions_adddup2(&actions, terminal, STDERR_FILENO);
    ::posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int error = ::posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
    ::posix_spawn_file_actions_destroy(&actions);
    ::close(terminal);
    if (error != 0) {
      errno = error;
      fail("posix_spawn " + args[0]);
    }
  }
  ~Command() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    ::close(master);
  }

  // Reads the terminal until text appears; false if the command ended first.
  bool wait_for(const std::string& text) {
    std::string seen;
    char buffer[4096];
    while (seen.find(text) == std::string::npos) {
      const ssize_t n = ::read(master, buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      seen.append(buffer, static_cast<std::size_t>(n));
    }
    return true;
  }

  // SIGINT, then the microseconds until waitpid() returns; throws unless the
  // command exited with 130. With message_us, also the microseconds until
  // the command's "interrupted" message is on the terminal.
  double interrupt(double* message_us = nullptr) {
    const auto sent = Clock::now();
    ::kill(pid, SIGINT);
    if (message_us) {
      if (!wait_for("interrupted by SIGINT")) throw std::runtime_error("no \"interrupted\" message");
      *message_us = us_between(sent, Clock::now());
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    const auto reaped = Clock::now();
    pid = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 130) throw std::runtime_error("the command did not exit with 130");
    return us_between(sent, reaped);
  }

  pid_t pid = 0;
  int master = -1;
};

// VmRSS of pid in bytes, or 0.
std::size_t resident_bytes(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  for (std::size_t kb = 0; status >> key;) {
    if (key == "VmRSS:" && status >> kb) return kb * 1024;
  }
  return 0;
}

// A forked child that touches `bytes` of anonymous memory, says so through
// a pipe and waits; SIGINT (its default action) ends it. Returns the
// microseconds from kill() to waitpid() returning.
double exit_holding(std::size_t bytes) {
  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) fail("pipe2");
  const pid_t child = ::fork();
  if (child < 0) fail("fork");
  if (child == 0) {
    ::signal(SIGINT, SIG_DFL);
    void* memory = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) ::_exit(1);
    // (As a process that wrote it all has it; one call, not a fault a page.)
    if (::madvise(memory, bytes, MADV_POPULATE_WRITE) != 0) {
      for (std::size_t at = 0; at < bytes; at += 4096) static_cast<volatile char*>(memory)[at] = 1;
    }
    (void)::write(ready[1], "r", 1);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char byte = 0;
  while (::read(ready[0], &byte, 1) < 0 && errno == EINTR) {
  }
  ::close(ready[0]);
  const auto sent = Clock::now();
  ::kill(child, SIGINT);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  const auto reaped = Clock::now();
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGINT) throw std::runtime_error("the memory child did not die of SIGINT");
  return us_between(sent, reaped);
}

struct TempPath {
  explicit TempPath(const std::string& name)
      : path(std::filesystem::temp_directory_path() /
             ("cancellable-cli-bench-" + std::to_string(::getpid()) + "-" + name)) {}
  ~TempPath() {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
  }
  std::filesystem::path path;
};

}  // namespace

int main(int argc, char** argv) {
  int samples = 30;
  bool json = false;
  std::string cli = CANCELLABLE_CLI_PATH;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      samples = 5;
    } else if (arg == "--samples" && i + 1 < argc) {
      samples = std::max(1, std::atoi(argv[++i]));
    } else if (arg == "--json") {
      json = true;
    } else if (arg == "--cli" && i + 1 < argc) {
      cli = argv[++i];
    } else if (arg == "--help" || arg == "-h") {
      std::cout << "usage: cancellable-cli-bench [--quick | --samples N] [--json] [--cli PATH]\n"
                   "  --quick      5 samples per row instead of 30\n"
                   "  --samples N  N samples per row\n"
                   "  --json      one JSON object per row and line instead of a table\n"
                   "  --cli PATH   the cancellable command (default: the one built beside this)\n";
      return 0;
    } else {
      std::cerr << "cancellable-cli-bench: unknown argument '" << arg << "' (try --help)\n";
      return 2;
    }
  }
  try {
    const TempPath sparse("sparse.json");
    { std::ofstream create(sparse.path); }
    std::filesystem::resize_file(sparse.path, std::uintmax_t{1} << 30);
    const TempPath fifo("input.fifo");
    if (::mkfifo(fifo.path.c_str(), 0600) != 0) fail("mkfifo");

    std::vector<double> in_madvise, in_read, floor, message_in_madvise;
    double resident_mb = 0;
    for (int i = 0; i < samples; ++i) {
      std::size_t resident = 0;
      {
        // Out of the page cache again: the holes are then read in as the
        // first time, ~0.1 s per 64 MiB here, not from memory.
        const int fd = ::open(sparse.path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) fail("open " + sparse.path.string());
        ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        ::close(fd);
        Command command({cli, "parse", sparse.path.string(), "--backend", "thread"});
        if (!command.wait_for(" of 1.07 GB, ")) throw std::runtime_error("no progress line from " + cli);
        resident = resident_bytes(command.pid);
        double message_us = 0;
        in_madvise.push_back(command.interrupt(&message_us));
        message_in_madvise.push_back(message_us);
      }
      resident_mb += static_cast<double>(resident) / 1e6 / samples;
      floor.push_back(exit_holding(resident));
      {
        Command command({cli, "parse", fifo.path.string(), "--backend", "thread"});
        // Opening the FIFO for writing waits for the command's reader; the
        // parse thread then waits in read().
        const int writer = ::open(fifo.path.c_str(), O_WRONLY | O_CLOEXEC);
        if (writer < 0) fail("open FIFO");
        if (!command.wait_for("reading")) throw std::runtime_error("no progress line from " + cli);
        in_read.push_back(command.interrupt());
        ::close(writer);
      }
    }
    Row baseline = make_row("cli_interrupt", "exit_holding_same_rss", floor);
    Row in_read_row = make_row("cli_interrupt", "interrupt_in_read", in_read);
    Row row = make_row("cli_interrupt", "interrupt_in_madvise", in_madvise);
    compare(row, baseline);
    set_p99_goal(row, 100'000);
    // The message: written by the signal thread as the signal arrives,
    // whatever the parse thread holds.
    Row message_row = make_row("cli_interrupt", "message_in_madvise", message_in_madvise);
    set_p99_goal(message_row, 100'000);
    const std::vector<Row> rows{baseline, in_read_row, row, message_row};
    std::cout << (json ? format_json_lines(rows) : format_table(rows));
    if (!json) std::printf("(resident when interrupted in madvise: %.0f MB on average)\n", resident_mb);
  } catch (const std::exception& e) {
    std::cerr << "cancellable-cli-bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
