// The cancellable command under signals: Ctrl-C (SIGINT) during a parse
// kills the worker at once and exits with status 130.
#include <catch2/catch.hpp>

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <vector>
#include <string>
#include <thread>

#include "helpers/process_support.hpp"

extern char** environ;

namespace {

pid_t spawn(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  REQUIRE(::posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) == 0);
  return pid;
}

int exit_status(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
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

}  // namespace

TEST_CASE("Ctrl-C during a parse kills the worker and exits with status 130", "[cli]") {
  const auto file = std::filesystem::temp_directory_path() /
                    ("cancellable-cli-test-" + std::to_string(::getpid()) + ".json");
  REQUIRE(exit_status(spawn({CANCELLABLE_GENERATE_JSON, "300000000", file.string()})) == 0);
  const pid_t cli = spawn({CANCELLABLE_CLI, "parse", file.string()});
  const pid_t worker = wait_for_child_of(cli, std::chrono::seconds(30));
  REQUIRE(worker > 0);
  ::kill(cli, SIGINT);
  CHECK(exit_status(cli) == 130);
  CHECK(process_support::wait_gone(worker));
  std::filesystem::remove(file);
}
