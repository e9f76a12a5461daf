// The cancellable command under signals and on a terminal: Ctrl-C (SIGINT)
// during a parse kills the worker at once and exits with status 130; a large
// parse shows a progress line on a terminal and clears it.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>
#include <string>
#include <thread>
#include <utility>

#include "helpers/process_support.hpp"

extern char** environ;

namespace {

pid_t spawn(std::vector<std::string> args, const posix_spawn_file_actions_t* actions = nullptr) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  REQUIRE(::posix_spawn(&pid, argv[0], actions, nullptr, argv.data(), environ) == 0);
  return pid;
}

int exit_status(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Runs args with stderr on a new pseudo-terminal and stdout into out_path;
// returns what the terminal received and the exit status.
std::pair<std::string, int> run_on_terminal(std::vector<std::string> args, const std::filesystem::path& out_path) {
  const int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  REQUIRE(master >= 0);
  REQUIRE(::grantpt(master) == 0);
  REQUIRE(::unlockpt(master) == 0);
  const int terminal = ::open(::ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
  REQUIRE(terminal >= 0);
  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawn_file_actions_adddup2(&actions, terminal, STDERR_FILENO);
  ::posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  const pid_t pid = spawn(std::move(args), &actions);
  ::posix_spawn_file_actions_destroy(&actions);
  ::close(terminal);  // the child holds the only other end: reads end (EIO) when it exits
  std::string received;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(master, buffer, sizeof buffer);
    if (n > 0) {
      received.append(buffer, static_cast<std::size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;
    }
  }
  ::close(master);
  return {received, exit_status(pid)};
}

// The first child process of pid, once it has one (the isolate worker).
pid_t wait_for_child_of(pid_t pid, std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    const std::string path = "/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children";
    std::ifstream children(path);
    pid_t child = 0;
    if (children >> child && child > 0) return child;
    std::this_thread::yield();
  }
  return 0;
}

// A generated JSON file of about `bytes` bytes and a file for the command's
// stdout, in the temporary directory; both removed however the test ends.
struct Sample {
  Sample(const std::string& name, const char* bytes) {
    const auto base = std::filesystem::temp_directory_path() /
                      ("cancellable-cli-" + name + "-" + std::to_string(::getpid()));
    json = base.string() + ".json";
    out = base.string() + ".out";
    REQUIRE(exit_status(spawn({CANCELLABLE_GENERATE_JSON, bytes, json.string()})) == 0);
  }
  ~Sample() {
    std::error_code ignored;
    std::filesystem::remove(json, ignored);
    std::filesystem::remove(out, ignored);
  }
  Sample(const Sample&) = delete;
  Sample& operator=(const Sample&) = delete;

  std::string output() const {
    std::ifstream file(out);
    return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
  }

  std::filesystem::path json;
  std::filesystem::path out;
};

}  // namespace

TEST_CASE("Ctrl-C during a parse kills the worker and exits with status 130", "[cli]") {
  const Sample sample("interrupt", "300000000");
  const pid_t cli = spawn({CANCELLABLE_CLI, "parse", sample.json.string()});
  const pid_t worker = wait_for_child_of(cli, std::chrono::seconds(30));
  REQUIRE(worker > 0);
  ::kill(cli, SIGINT);
  CHECK(exit_status(cli) == 130);
  CHECK(process_support::wait_gone(worker));
}

TEST_CASE("parsing a file over 100 MB on a terminal shows a progress line and clears it", "[cli]") {
  const Sample sample("progress", "101000000");
  const auto [terminal, status] = run_on_terminal({CANCELLABLE_CLI, "parse", sample.json.string()}, sample.out);
  CHECK(status == 0);
  // The line is there from the start and rewritten in place ("\r"), then
  // overwritten with blanks; nothing else reaches the terminal.
  CHECK(terminal.rfind("\rstarting ", 0) == 0);
  const std::string blank = "\r" + std::string(30, ' ') + "\r";
  CHECK(terminal.size() >= blank.size());
  CHECK(terminal.substr(terminal.size() - blank.size()) == blank);
  const auto bytes = std::to_string(std::filesystem::file_size(sample.json));
  CHECK(sample.output().find("bytes:    " + bytes + "\n") != std::string::npos);
}

TEST_CASE("a file of 100 MB or less gets no progress line, even on a terminal", "[cli]") {
  const Sample sample("small", "2000000");
  const auto [terminal, status] = run_on_terminal({CANCELLABLE_CLI, "parse", sample.json.string()}, sample.out);
  CHECK(status == 0);
  CHECK(terminal.empty());
  CHECK(sample.output().find("objects:") != std::string::npos);
}
