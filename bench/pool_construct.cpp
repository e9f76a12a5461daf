// pool_construct: the first WorkerPool of a process, made in a fresh process
// each sample (cancellable-bench itself, started with posix_spawn in its
// --pool-construct-child mode), tiny or holding 1 GiB it has written.
// Goal: the 1 GiB parent's p50 <= 1.2x the tiny parent's (the keeper was a
// fork of the parent: 24-46 ms against 2-7 ms). Linked into cancellable-bench
// only (the command has no child mode).
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/measure.hpp"
#include "cancellable/pool.hpp"

extern char** environ;

namespace cancellable::bench {

// The child: optionally writes 1 GiB, then times its first pool's
// constructor and prints the microseconds.
int pool_construct_child(bool ballast) {
  std::optional<Ballast> big;
  if (ballast) big.emplace();
  PoolOptions options;
  const char* worker = std::getenv("CANCELLABLE_WORKER_PROGRAM");
  options.worker_program = worker ? worker : CANCELLABLE_BENCH_WORKER_PROGRAM;
  options.size = 1;
  options.standby = 1;
  const auto start = Clock::now();
  double us = 0;
  {
    WorkerPool pool(options);
    us = us_between(start, Clock::now());
  }
  std::printf("%.3f\n", us);
  return 0;
}

namespace {

double construct_in_fresh_process(bool ballast) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) throw std::runtime_error("pipe");
  std::string self = "/proc/self/exe", mode = "--pool-construct-child", big = "--ballast";
  std::vector<char*> argv{self.data(), mode.data()};
  if (ballast) argv.push_back(big.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
  ::posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, self.c_str(), &actions, nullptr, argv.data(), environ);
  ::posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  if (rc != 0) {
    ::close(pipe_fds[0]);
    throw std::runtime_error("pool_construct: cannot start the child");
  }
  std::string out;
  char buf[64];
  for (ssize_t n; (n = ::read(pipe_fds[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || out.empty())
    throw std::runtime_error("pool_construct: the child failed");
  return std::stod(out);
}

std::vector<Row> pool_construct(const Settings& settings) {
  const std::size_t samples = settings.quick ? 5 : 21;
  std::vector<double> tiny, big;
  for (std::size_t i = 0; i < samples; ++i) {  // (Interleaved.)
    tiny.push_back(construct_in_fresh_process(false));
    big.push_back(construct_in_fresh_process(true));
  }
  auto t = make_row("pool_construct", "tiny_parent", std::move(tiny));
  auto b = make_row("pool_construct", "1gb_parent", std::move(big));
  compare(b, t);
  b.goal = Goal{"p50 <= 1.2x tiny_parent p50", *b.ratio_p50 <= 1.2};
  return {std::move(t), std::move(b)};
}

const bool registered = [] {
  add_scenario({"pool_construct", pool_construct});
  return true;
}();

}  // namespace
}  // namespace cancellable::bench
