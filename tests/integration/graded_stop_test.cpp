// Graded stop (stop_policy.hpp): the work is asked to stop, then killed when
// the grace runs out, while the caller's future fails at once. Each behaviour
// is one test body run for a fork isolate and a pool task (this test binary
// is its own pools' worker program: PoolOptions::worker_program left empty).
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <stop_token>
#include <string>

#include "cancellable/exceptions.hpp"
#include "cancellable/isolate.hpp"
#include "cancellable/pool.hpp"
#include "cancellable/stop_policy.hpp"
#include "cancellable/task_group.hpp"
#include "support/process_support.hpp"
#include "support/temp_file.hpp"
#include "support/test_support.hpp"

using namespace cancellable;
using namespace std::chrono_literals;

namespace {

// Sleeps until the token is cancelled (no polling).
void wait_until_cancelled(const CancellationToken& token) {
  std::mutex mutex;
  std::condition_variable_any cv;
  std::unique_lock lock(mutex);
  cv.wait(lock, token.stop_token(), [] { return false; });
}

// Creates `path`, waits to be asked to stop, removes it, and returns.
int clean_up_when_asked(std::string path) {
  std::ofstream(path) << "work in progress\n";
  wait_until_cancelled(work_stop_token());
  std::filesystem::remove(path);
  return 1;
}
constexpr Task<int(std::string)> clean_up_when_asked_task{"test.clean_up_when_asked"};
CANCELLABLE_TASK(clean_up_when_asked_task, clean_up_when_asked);

// Starts a child (its pid in pid_file), then ignores every request to stop.
int ignore_the_request(std::string pid_file) {
  const pid_t child = ::fork();
  if (child == 0) {
    for (;;) ::pause();
  }
  std::ofstream(pid_file + ".tmp") << child << "\n";
  std::filesystem::rename(pid_file + ".tmp", pid_file);
  for (;;) ::pause();
}
constexpr Task<int(std::string)> ignore_the_request_task{"test.ignore_the_request"};
CANCELLABLE_TASK(ignore_the_request_task, ignore_the_request);

// Does not watch its token: returns once SIGTERM came (its handler only
// sets a flag). Writes `path` once the handler is in place.
volatile sig_atomic_t terminated = 0;
int stop_on_sigterm(std::string path) {
  terminated = 0;
  struct sigaction action {};
  action.sa_handler = [](int) { terminated = 1; };
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGTERM, &action, nullptr);
  std::ofstream(path) << "ready\n";
  while (!terminated) ::pause();
  std::filesystem::remove(path);
  return 2;
}
constexpr Task<int(std::string)> stop_on_sigterm_task{"test.stop_on_sigterm"};
CANCELLABLE_TASK(stop_on_sigterm_task, stop_on_sigterm);

int fail_with(std::string message) { throw std::runtime_error(message); }
constexpr Task<int(std::string)> fail_with_task{"test.graded.fail_with"};
CANCELLABLE_TASK(fail_with_task, fail_with);

int own_pid() { return static_cast<int>(::getpid()); }
constexpr Task<int()> own_pid_task{"test.graded.own_pid"};
CANCELLABLE_TASK(own_pid_task, own_pid);

PoolOptions this_program(std::size_t size = 1, std::size_t standby = 0) {
  PoolOptions options;  // (worker_program left empty: this program, which calls worker_main)
  options.size = size;
  options.standby = standby;
  return options;
}

IsolateOptions on(Backend backend, WorkerPool& pool, StopPolicy stop) {
  IsolateOptions options;
  options.backend = backend;
  if (backend == Backend::pool) options.pool = &pool;
  options.stop = stop;
  return options;
}

bool wait_for_file(const std::filesystem::path& path) {
  return process_support::eventually([&] { return std::filesystem::exists(path); });
}

// The pid a task wrote into path, once it is there.
pid_t read_pid(const std::filesystem::path& path) {
  if (!wait_for_file(path)) return 0;
  std::ifstream in(path);
  pid_t pid = 0;
  in >> pid;
  return pid;
}

// Runs task(argument) with a grace on either backend: a pool task, or the
// same function in a fork isolate. Its future and its settled().
struct Started {
  Future<int> future;
  Future<StopOutcome> settled;
};
Started start_on(Backend backend, WorkerPool& pool, const Task<int(std::string)>& task, int (*fn)(std::string),
                 const std::string& argument, const CancellationToken& token, StopPolicy stop) {
  if (backend == Backend::pool) {
    TaskOptions options;
    options.stop = stop;
    auto run = pool.start(task, argument, token, options);
    return {run.future(), run.settled()};
  }
  auto isolate = CancellableIsolate::spawn([fn, argument] { return fn(argument); }, token, on(backend, pool, stop));
  return {isolate.future(), isolate.settled()};
}

}  // namespace

TEST_CASE("work asked to stop removes its temporary file, while its caller failed at once, on both backends", "[stop][pool][fork]") {
  WorkerPool pool(this_program());
  for (const Backend backend : {Backend::process, Backend::pool}) {
    INFO(to_string(backend));
    const test_support::TempPath file(std::string("graded-clean-") + to_string(backend));
    CancellationToken token;
    StopPolicy stop;
    stop.grace = 120s;  // (never reached: the work stops long before)
    auto [future, settled] = start_on(backend, pool, clean_up_when_asked_task, clean_up_when_asked, file.path.string(), token, stop);
    REQUIRE(wait_for_file(file.path));
    token.cancel();
    // At once: failed inside cancel(), before the work has even heard.
    CHECK(future.is_ready());
    CHECK_THROWS_AS(future.get(), CancelledException);
    REQUIRE(settled.wait_for(120s) == std::future_status::ready);
    CHECK(settled.get() == StopOutcome::stopped);
    CHECK_FALSE(std::filesystem::exists(file.path));
  }
}

TEST_CASE("a pool worker that stops within the grace serves the next task without a spawn", "[stop][pool]") {
  WorkerPool pool(this_program(1, 0));
  const int worker = pool.run(own_pid_task).get();
  const auto started = pool.stats().workers_started;
  const test_support::TempPath file("graded-reuse");
  CancellationToken token;
  TaskOptions options;
  options.stop = StopPolicy{120s};
  auto run = pool.start(clean_up_when_asked_task, file.path.string(), token, options);
  REQUIRE(wait_for_file(file.path));
  token.cancel();
  CHECK_THROWS_AS(run.future().get(), CancelledException);
  CHECK(pool.run(own_pid_task).get() == worker);  // the same process
  CHECK(run.settled().get() == StopOutcome::stopped);
  const PoolStats stats = pool.stats();
  CHECK(stats.workers_started == started);
  CHECK(stats.tasks_stopped == 1);
  CHECK(stats.tasks_killed == 0);
  CHECK(stats.crashes == 0);
}

TEST_CASE("work that ignores the request is killed with what it started when the grace runs out, on both backends", "[stop][pool][fork]") {
  WorkerPool pool(this_program());
  for (const Backend backend : {Backend::process, Backend::pool}) {
    INFO(to_string(backend));
    const test_support::TempPath pid_file(std::string("graded-ignore-") + to_string(backend));
    CancellationToken token;
    StopPolicy stop;
    stop.grace = 100ms;
    auto [future, settled] = start_on(backend, pool, ignore_the_request_task, ignore_the_request, pid_file.path.string(), token, stop);
    const pid_t child = read_pid(pid_file.path);
    REQUIRE(child > 0);
    token.cancel();
    CHECK(future.is_ready());
    CHECK_THROWS_AS(future.get(), CancelledException);
    REQUIRE(settled.wait_for(120s) == std::future_status::ready);
    CHECK(settled.get() == StopOutcome::killed_after_grace);
    CHECK(process_support::wait_gone(child, 60s));
  }
  CHECK(pool.stats().tasks_killed == 1);
  CHECK(pool.run(own_pid_task).get() > 0);  // (a fresh worker)
}

TEST_CASE("terminate_first stops work that handles SIGTERM but does not watch its token, on both backends", "[stop][pool][fork]") {
  WorkerPool pool(this_program());
  const int worker = pool.run(own_pid_task).get();
  for (const Backend backend : {Backend::process, Backend::pool}) {
    INFO(to_string(backend));
    const test_support::TempPath file(std::string("graded-term-") + to_string(backend));
    CancellationToken token;
    StopPolicy stop;
    stop.grace = 120s;
    stop.terminate_first = true;
    auto [future, settled] = start_on(backend, pool, stop_on_sigterm_task, stop_on_sigterm, file.path.string(), token, stop);
    REQUIRE(wait_for_file(file.path));
    token.cancel();
    CHECK_THROWS_AS(future.get(), CancelledException);
    REQUIRE(settled.wait_for(120s) == std::future_status::ready);
    CHECK(settled.get() == StopOutcome::stopped);
    CHECK_FALSE(std::filesystem::exists(file.path));
  }
  CHECK(pool.run(own_pid_task).get() == worker);  // (it returned: reused)
}

TEST_CASE("a closure that takes a std::stop_token is asked through it in a fork isolate; without a grace it is killed", "[stop][fork]") {
  WorkerPool unused(this_program());
  const test_support::TempPath file("graded-stop-token");
  for (const bool graded : {true, false}) {
    INFO(graded);
    CancellationToken token;
    StopPolicy stop;
    if (graded) stop.grace = 120s;
    auto isolate = CancellableIsolate::spawn(
        [path = file.path.string()](std::stop_token asked) {
          std::ofstream(path) << "ready\n";
          std::mutex mutex;
          std::condition_variable_any cv;
          std::unique_lock lock(mutex);
          cv.wait(lock, asked, [] { return false; });
          std::filesystem::remove(path);
          return 3;
        },
        token, on(Backend::process, unused, stop));
    REQUIRE(wait_for_file(file.path));
    token.cancel();
    CHECK_THROWS_AS(isolate.future().get(), CancelledException);
    const ProcessExit exit = isolate.exited().get();
    if (graded) {
      CHECK(exit.stop == StopOutcome::stopped);
      CHECK(exit.kind == ProcessExit::Kind::exited);
      CHECK_FALSE(std::filesystem::exists(file.path));
    } else {
      CHECK(exit.stop == StopOutcome::killed);
      CHECK(exit == ProcessExit{ProcessExit::Kind::killed, 0, SIGKILL, StopOutcome::killed});
      CHECK(std::filesystem::exists(file.path));
      std::filesystem::remove(file.path);
    }
  }
}

TEST_CASE("the thread backend cancels the work's token, and abandons the thread when the grace runs out", "[stop][thread]") {
  WorkerPool unused(this_program());
  IsolateOptions options = on(Backend::thread, unused, StopPolicy{120s});
  {
    // Stops within the grace: exited() says so.
    auto running = std::make_shared<test_support::Event>();
    CancellationToken token;
    auto isolate = CancellableIsolate::spawn([running] {
      running->set();
      wait_until_cancelled(work_stop_token());
      return 1;
    }, token, options);
    REQUIRE(running->wait());
    token.cancel();
    CHECK_THROWS_AS(isolate.future().get(), CancelledException);
    CHECK(isolate.exited().get().stop == StopOutcome::stopped);
  }
  {
    // Ignores it: abandoned at the grace's end, while it still runs.
    auto release = std::make_shared<test_support::Event>();
    auto returned = std::make_shared<test_support::Event>();
    auto running = std::make_shared<test_support::Event>();
    options.stop.grace = 50ms;
    CancellationToken token;
    auto isolate = CancellableIsolate::spawn([release, returned, running] {
      running->set();
      release->wait();
      returned->set();
      return 2;
    }, token, options);
    REQUIRE(running->wait());
    token.cancel();
    CHECK_THROWS_AS(isolate.future().get(), CancelledException);
    CHECK(isolate.exited().get().stop == StopOutcome::abandoned_after_grace);
    CHECK_FALSE(returned->is_set());
    release->set();
    CHECK(returned->wait());
  }
}

TEST_CASE("work_stop_token() outside any work is none(), and a negative grace is refused", "[stop]") {
  CHECK(work_stop_token() == CancellationToken::none());
  IsolateOptions options;
  options.stop.grace = -1ms;
  CHECK_THROWS_AS(CancellableIsolate::run([] { return 1; }, CancellationToken::none(), options), std::invalid_argument);
  PoolOptions pool_options = this_program();
  pool_options.stop.grace = -1ms;
  CHECK_THROWS_AS(WorkerPool(pool_options), std::invalid_argument);
  WorkerPool pool(this_program());
  TaskOptions task;
  task.stop = StopPolicy{-1ms};
  CHECK_THROWS_AS(pool.run(own_pid_task, CancellationToken::none(), task), std::invalid_argument);
}

TEST_CASE("a pool's worker program defaults to the running program when it calls worker_main", "[stop][pool]") {
  WorkerPool pool(this_program());
  CHECK(pool.run(own_pid_task).get() != ::getpid());
}

namespace {
int echo_after_release(std::string fifo) {
  // Returns once the test writes to the FIFO (a blocking read: no polling),
  // with the path's length.
  std::ifstream in(fifo);
  std::string word;
  in >> word;
  return static_cast<int>(fifo.size());
}
constexpr Task<int(std::string)> echo_after_release_task{"test.echo_after_release"};
CANCELLABLE_TASK(echo_after_release_task, echo_after_release);
}  // namespace

TEST_CASE("drain() refuses new tasks, finishes the queued and running ones, then stops every worker", "[stop][pool]") {
  WorkerPool pool(this_program(1, 1));
  const test_support::TempPath release("graded-drain-release");
  REQUIRE(::mkfifo(release.path.c_str(), 0600) == 0);
  auto running = pool.run(echo_after_release_task, release.path.string());
  auto queued = pool.run(own_pid_task);
  auto drained = pool.drain();
  CHECK_THROWS_AS(pool.run(own_pid_task), PoolClosed);
  CHECK_FALSE(drained.is_ready());  // (the first task waits for the file)
  std::ofstream(release.path) << "go\n";
  CHECK(running.get() == static_cast<int>(release.path.string().size()));
  CHECK(queued.get() > 0);
  REQUIRE(drained.wait_for(120s) == std::future_status::ready);
  const PoolStats stats = pool.stats();
  CHECK(stats.busy + stats.idle + stats.starting == 0);
  CHECK(stats.tasks_run == 2);
  CHECK(stats.tasks_killed == 0);
}

TEST_CASE("shutdown() with a grace fails queued and running tasks at once and lets the running one clean up", "[stop][pool]") {
  WorkerPool pool(this_program(1, 0));
  const test_support::TempPath file("graded-shutdown");
  auto running = pool.start(clean_up_when_asked_task, file.path.string());
  auto queued = pool.start(own_pid_task);
  REQUIRE(wait_for_file(file.path));
  auto done = pool.shutdown(StopPolicy{120s});
  CHECK(running.future().is_ready());
  CHECK_THROWS_AS(running.future().get(), CancelledException);
  CHECK(queued.future().is_ready());
  CHECK_THROWS_AS(queued.future().get(), CancelledException);
  CHECK(queued.settled().get() == StopOutcome::none);  // never started
  REQUIRE(done.wait_for(120s) == std::future_status::ready);
  CHECK(running.settled().get() == StopOutcome::stopped);
  CHECK_FALSE(std::filesystem::exists(file.path));
  CHECK_THROWS_AS(pool.run(own_pid_task), PoolClosed);
  CHECK(pool.stats().tasks_stopped == 1);
}

TEST_CASE("a task group's join returns only once its isolate and pool task have ended, clean-up included", "[group][stop][pool][fork]") {
  WorkerPool pool(this_program(2, 0));
  StopPolicy stop;
  stop.grace = 120s;  // (never reached: the work stops long before)
  TaskOptions task_options;
  task_options.stop = stop;
  {
    // A pool task's failure cancels the group: the fork isolate is asked to
    // stop, cleans up, and join() waits for that.
    const test_support::TempPath file("group-isolate");
    TaskGroup group;
    auto isolate = group.spawn([&](const CancellationToken& token) {
      return CancellableIsolate::spawn([path = file.path.string()] { return clean_up_when_asked(path); }, token,
                                       on(Backend::process, pool, stop));
    });
    REQUIRE(wait_for_file(file.path));
    auto failing = group.spawn([&](const CancellationToken& token) {
      return pool.start(fail_with_task, std::string("no such row"), token);
    });
    CHECK_THROWS_WITH(failing.get(), "no such row");
    CHECK(isolate.is_ready());  // cancelled by the failure, at once
    CHECK_THROWS_WITH(group.join().get(), "no such row");
    CHECK_FALSE(std::filesystem::exists(file.path));
  }
  {
    // cancel(): the pool task cleans up within its grace before join() returns.
    const test_support::TempPath file("group-pool");
    TaskGroup group;
    auto task = group.spawn([&](const CancellationToken& token) {
      return pool.start(clean_up_when_asked_task, file.path.string(), token, task_options);
    });
    REQUIRE(wait_for_file(file.path));
    group.cancel();
    CHECK(task.is_ready());
    CHECK_THROWS_AS(group.join().get(), CancelledException);
    CHECK_FALSE(std::filesystem::exists(file.path));
    CHECK(pool.stats().tasks_stopped == 1);
  }
}
