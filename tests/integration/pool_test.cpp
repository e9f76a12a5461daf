// WorkerPool with real worker processes: the cancellable-worker program with
// the built-in tasks, and this test binary as its own worker program with
// the tasks registered below.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cancellable/builtin_tasks.hpp"
#include "cancellable/json_tasks.hpp"
#include "cancellable/cancellation_token.hpp"
#include "cancellable/exceptions.hpp"
#include "cancellable/isolate.hpp"
#include "cancellable/isolate_errors.hpp"
#include "cancellable/pool.hpp"
#include "support/spin.hpp"
#include "support/temp_file.hpp"
#include "support/process_support.hpp"
#include "support/test_support.hpp"

extern char** environ;

using namespace cancellable;
using namespace std::chrono_literals;

namespace {

// Tasks of this test binary, when it runs as a pool worker.
int write_pid_and_spin(std::string path) {
  {
    std::ofstream out(path + ".tmp");
    out << ::getpid() << "\n";
  }
  std::filesystem::rename(path + ".tmp", path);
  test_support::burn_cpu_forever();
}
int create_file(std::string path) {
  std::ofstream out(path);
  return 1;
}
int create_file_with_ballast(std::string path, std::string) { return create_file(std::move(path)); }
std::string create_a_pool_inside() {
  try {
    PoolOptions options;
    options.worker_program = "/proc/self/exe";
    WorkerPool nested(options);
  } catch (const std::logic_error& e) {
    return e.what();
  }
  return "no error";
}

int own_pid() { return static_cast<int>(::getpid()); }

// Plain data (no serialize()): a result before, now an argument too.
struct Point {
  int x;
  double y;
  std::array<int, 3> z;
};
Point moved(Point p, std::vector<Point> more, std::string label) {
  for (const auto& m : more) {
    p.x += m.x;
    p.y += m.y;
  }
  p.z[0] = static_cast<int>(label.size());
  return p;
}
std::string joined(std::string a, int b) { return a + ":" + std::to_string(b); }

constexpr Task<int(std::string)> write_pid_and_spin_task{"test.write_pid_and_spin"};
constexpr Task<int()> own_pid_task{"test.own_pid"};
constexpr Task<std::string(std::string, int)> joined_task{"test.joined"};
constexpr Task<int()> unregistered_task{"test.registered_nowhere"};
CANCELLABLE_TASK(own_pid_task, own_pid);
CANCELLABLE_TASK(joined_task, joined);
constexpr Task<int(std::string)> create_file_task{"test.create_file"};
constexpr Task<int(std::string, std::string)> create_file_with_ballast_task{"test.create_file_with_ballast"};
CANCELLABLE_TASK(create_file_with_ballast_task, create_file_with_ballast);
constexpr Task<std::string()> create_a_pool_inside_task{"test.create_a_pool_inside"};
CANCELLABLE_TASK(write_pid_and_spin_task, write_pid_and_spin);
CANCELLABLE_TASK(create_file_task, create_file);
CANCELLABLE_TASK(create_a_pool_inside_task, create_a_pool_inside);
// Reports half way from a thread of its own (report_progress works from any
// thread of a pool task), then spins until it is killed.
int report_half_way_then_spin() {
  std::thread([] { report_progress(5, 10, "half way"); }).join();
  test_support::burn_cpu_forever();
}
constexpr Task<int()> report_half_way_then_spin_task{"test.report_half_way_then_spin"};
CANCELLABLE_TASK(report_half_way_then_spin_task, report_half_way_then_spin);
int report_once(int done) {
  report_progress(static_cast<std::uint64_t>(done), 100, "once");
  return done;
}
constexpr Task<int(int)> report_once_task{"test.report_once"};
CANCELLABLE_TASK(report_once_task, report_once);
// Starts a child (which pauses), writes its pid to path, then spins.
int start_child_and_spin(std::string path) {
  const pid_t child = ::fork();
  if (child == 0) test_support::pause_forever();
  {
    std::ofstream out(path + ".tmp");
    out << child << "\n";
  }
  std::filesystem::rename(path + ".tmp", path);
  test_support::burn_cpu_forever();
}
constexpr Task<int(std::string)> start_child_and_spin_task{"test.start_child_and_spin"};
CANCELLABLE_TASK(start_child_and_spin_task, start_child_and_spin);

// Ignores SIGXCPU, then spins: only the hard CPU limit stops it.
int ignore_sigxcpu_and_spin() {
  ::signal(SIGXCPU, SIG_IGN);
  test_support::burn_cpu_forever();
}
constexpr Task<int()> ignore_sigxcpu_and_spin_task{"test.ignore_sigxcpu_and_spin"};
CANCELLABLE_TASK(ignore_sigxcpu_and_spin_task, ignore_sigxcpu_and_spin);
constexpr Task<Point(Point, std::vector<Point>, std::string)> moved_task{"test.moved"};
CANCELLABLE_TASK(moved_task, moved);

PoolOptions builtin_pool(std::size_t size = 1, std::size_t standby = 1) {
  PoolOptions options;
  options.worker_program = CANCELLABLE_WORKER_PROGRAM;
  options.size = size;
  options.standby = standby;
  return options;
}

PoolOptions self_pool(std::size_t size = 1, std::size_t standby = 1) {
  PoolOptions options = builtin_pool(size, standby);
  options.worker_program = std::filesystem::read_symlink("/proc/self/exe");
  return options;
}

using test_support::TempPath;

// The pid a task wrote into path, once it is there.
pid_t wait_for_pid_file(const std::filesystem::path& path) {
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream in(path);
    pid_t pid = 0;
    if (in >> pid) return pid;
    std::this_thread::yield();
  }
  return 0;
}

// Starts the pool parent helper with a mode and the worker program, then
// more arguments.
pid_t start_pool_helper(const std::string& mode, const std::string& last,
                        const std::string& worker = CANCELLABLE_WORKER_PROGRAM) {
  std::vector<std::string> args{CANCELLABLE_POOL_PARENT_HELPER, mode, worker, last};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (::posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) return -1;
  return pid;
}

// The helper's exit code once it ends by itself (-1 if killed).
int pool_helper_status(const std::string& mode, const std::string& last,
                       const std::string& worker = CANCELLABLE_WORKER_PROGRAM) {
  const pid_t pid = start_pool_helper(mode, last, worker);
  if (pid <= 0) return -1;
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

template <class T>
std::exception_ptr error_of(const Future<T>& f) {
  if (f.wait_for(120s) != std::future_status::ready) return nullptr;
  return f.exception();
}

}  // namespace

TEST_CASE("a pool runs built-in tasks in cancellable-worker and returns their results", "[pool]") {
  WorkerPool pool(builtin_pool(1, 0));  // one worker: the same one each time
  CHECK(pool.run(builtin::empty).get() == 0);
  CHECK(pool.run(builtin::echo, std::string("héllo")).get() == "héllo");
#if CANCELLABLE_TEST_JSON  // (the JSON tasks come with the json component)
  const auto summary = pool.run(builtin::parse_json_buffer, std::string(R"([1, {"a": 2}, "x"])")).get();
  CHECK(summary.top_level_is_array);
  CHECK(summary.top_level_elements == 3);
  CHECK(summary.bytes == 18);
#endif
  const pid_t worker = pool.run(builtin::pid).get();
  CHECK(worker != ::getpid());
  CHECK(pool.run(builtin::pid).get() == worker);  // the same worker, reused
}

TEST_CASE("a task's exception arrives with its type, and an unknown task name is a clear error", "[pool]") {
  WorkerPool pool(builtin_pool());
  CHECK_THROWS_MATCHES(pool.run(builtin::fail, std::string("no luck")).get(), std::runtime_error,
                       Catch::Matchers::Message("no luck"));
  constexpr Task<int()> missing{"no.such.task"};
  CHECK_THROWS_WITH(pool.run(missing).get(), Catch::Matchers::Contains("no task named 'no.such.task'"));
  CHECK_THROWS_AS(pool.run(missing).get(), std::invalid_argument);
#if CANCELLABLE_TEST_JSON
  CHECK_THROWS_AS(pool.run(builtin::parse_json_buffer, std::string("[1,")).get(), std::exception);
#endif
  CHECK(pool.run(builtin::empty).get() == 0);
}

TEST_CASE("a worker that crashes or exits fails only its own task, and the pool goes on", "[pool]") {
  WorkerPool pool(builtin_pool());
  try {
    pool.run(builtin::crash, SIGSEGV).get();
    FAIL("no exception");
  } catch (const WorkerCrashed& e) {
    CHECK(e.exit().kind == ProcessExit::Kind::killed);
    CHECK(e.exit().signal == SIGSEGV);
  }
  try {
    pool.run(builtin::exit_code, 3).get();
    FAIL("no exception");
  } catch (const WorkerCrashed& e) {
    CHECK(e.exit().kind == ProcessExit::Kind::exited);
    CHECK(e.exit().code == 3);
  }
  CHECK(pool.run(builtin::echo, std::string("still here")).get() == "still here");
  CHECK(pool.stats().crashes == 2);
}

TEST_CASE("a task cancelled while running fails at once, its worker dies, and the next task runs", "[pool]") {
  WorkerPool pool(self_pool());
  const TempPath pid_file("cancel-running");
  CancellationToken token;
  auto running = pool.run(write_pid_and_spin_task, pid_file.path.string(), token);
  const pid_t worker = wait_for_pid_file(pid_file.path);
  REQUIRE(worker > 0);
  token.cancel();
  CHECK_THROWS_AS(running.get(), CancelledException);
  CHECK(process_support::wait_gone(worker));
  CHECK(pool.run(create_file_task, (pid_file.path.string() + ".next")).get() == 1);
  std::filesystem::remove(pid_file.path.string() + ".next");
  const auto stats = pool.stats();
  CHECK(stats.tasks_killed == 1);
  CHECK(stats.tasks_run == 1);
}

TEST_CASE("a task cancelled while queued never starts", "[pool]") {
  WorkerPool pool(self_pool(1, 0));
  const TempPath pid_file("queued-spinner");
  const TempPath marker("queued-marker");
  CancellationToken spinner_token, queued_token;
  auto spinner = pool.run(write_pid_and_spin_task, pid_file.path.string(), spinner_token);
  REQUIRE(wait_for_pid_file(pid_file.path) > 0);  // the only slot is taken
  auto queued = pool.run(create_file_task, marker.path.string(), queued_token);
  CHECK(pool.stats().queued == 1);
  queued_token.cancel();
  CHECK_THROWS_AS(queued.get(), CancelledException);
  CHECK(pool.stats().queued == 0);
  spinner_token.cancel();
  CHECK_THROWS_AS(spinner.get(), CancelledException);
  // The next task runs (on the replacement worker); the cancelled one did not.
  const TempPath after("queued-after");
  CHECK(pool.run(create_file_task, after.path.string()).get() == 1);
  CHECK(std::filesystem::exists(after.path));
  CHECK_FALSE(std::filesystem::exists(marker.path));
}

TEST_CASE("settled() of a killed task completes once its worker is reaped; of others, with their outcome", "[pool]") {
  WorkerPool pool(self_pool(1, 0));
  const TempPath pid_file("settled-running");
  const TempPath marker("settled-marker");
  CancellationToken token;
  auto running = pool.start(write_pid_and_spin_task, pid_file.path.string(), token);
  const pid_t worker = wait_for_pid_file(pid_file.path);
  REQUIRE(worker > 0);
  // Queued behind it, then cancelled: it never started, so it is over.
  CancellationToken queued_token;
  auto queued = pool.start(create_file_task, marker.path.string(), queued_token);
  queued_token.cancel();
  CHECK(queued.settled().is_ready());
  CHECK(queued.settled().exception() == nullptr);
  // The spinning worker lives until it is killed.
  CHECK_FALSE(running.settled().is_ready());
  token.cancel();
  CHECK(running.future().is_ready());  // failed at once
  REQUIRE(running.settled().wait_for(60s) == std::future_status::ready);
  CHECK(running.settled().exception() == nullptr);
  // Reaped by then: no process has its pid.
  CHECK(::kill(worker, 0) == -1);
  CHECK(errno == ESRCH);
  // Answered: settled with its outcome, the worker going on.
  auto answered = pool.start(create_file_task, marker.path.string());
  CHECK(answered.future().get() == 1);
  CHECK(answered.settled().wait_for(60s) == std::future_status::ready);
  // Never queued: settled at once.
  CancellationToken cancelled;
  cancelled.cancel();
  auto never = pool.start(create_file_task, marker.path.string(), cancelled);
  CHECK(never.future().is_ready());
  CHECK(never.settled().is_ready());
}

TEST_CASE("CancellableIsolate::run sends a task to a pool with Backend::pool, and forks or threads it otherwise",
          "[pool][fork]") {
  WorkerPool pool(self_pool(1, 0));
  const int worker = pool.run(own_pid_task).get();
  IsolateOptions in_pool;
  in_pool.backend = Backend::pool;
  in_pool.pool = &pool;
  CHECK(CancellableIsolate::run(own_pid_task, CancellationToken::none(), in_pool).get() == worker);
  CHECK(CancellableIsolate::run(joined_task, std::string("a"), 7, CancellationToken::none(), in_pool).get() ==
        "a:7");
  IsolateOptions forked;
  forked.backend = Backend::process;
  const int child = CancellableIsolate::run(own_pid_task, CancellationToken::none(), forked).get();
  CHECK(child != ::getpid());
  CHECK(child != worker);
  IsolateOptions threaded;
  threaded.backend = Backend::thread;
  CHECK(CancellableIsolate::run(own_pid_task, CancellationToken::none(), threaded).get() == ::getpid());
  CHECK(CancellableIsolate::run(joined_task, std::string("b"), 8).get() == "b:8");
  CHECK(pool.stats().tasks_run == 3);

  // Cancelled in the pool: the worker is killed.
  const TempPath pid_file("isolate-in-pool");
  CancellationToken token;
  auto spinning = CancellableIsolate::run(write_pid_and_spin_task, pid_file.path.string(), token, in_pool);
  const pid_t spinner = wait_for_pid_file(pid_file.path);
  CHECK(spinner == worker);
  token.cancel();
  CHECK_THROWS_AS(spinning.get(), CancelledException);
  CHECK(process_support::wait_gone(spinner));
  CHECK(pool.stats().tasks_killed == 1);

  // What cannot work says so.
  IsolateOptions no_pool;
  no_pool.backend = Backend::pool;
  CHECK_THROWS_AS(CancellableIsolate::run(own_pid_task, CancellationToken::none(), no_pool), std::invalid_argument);
  IsolateOptions limited = in_pool;
  limited.memory_limit_bytes = 1 << 20;
  CHECK_THROWS_AS(CancellableIsolate::run(own_pid_task, CancellationToken::none(), limited), std::invalid_argument);
  CHECK_THROWS_AS(CancellableIsolate::run([] { return 1; }, CancellationToken::none(), in_pool),
                  std::invalid_argument);
  CHECK_THROWS_WITH(CancellableIsolate::run(unregistered_task, CancellationToken::none(), forked),
                    Catch::Contains("test.registered_nowhere"));
  // Not in the worker program either: a clear error from the pool.
  CHECK_THROWS_AS(CancellableIsolate::run(unregistered_task, CancellationToken::none(), in_pool).get(),
                  std::invalid_argument);
}

TEST_CASE("a task's timeout fails it with TimeoutException and kills its worker", "[pool]") {
  WorkerPool pool(builtin_pool(1, 0));  // one worker: the spin runs on it
  const pid_t worker = pool.run(builtin::pid).get();
  TaskOptions options;
  options.timeout = 50ms;
  CHECK_THROWS_AS(pool.run(builtin::spin, CancellationToken::none(), options).get(), TimeoutException);
  CHECK(process_support::wait_gone(worker));
  CHECK(pool.run(builtin::pid).get() != worker);
}

TEST_CASE("a worker holds descriptors 0, 1 and 2 only, even when the parent has one without close-on-exec",
          "[pool]") {
  const int leaky = ::open("/dev/null", O_RDONLY);  // no O_CLOEXEC, on purpose
  REQUIRE(leaky >= 0);
  {
    WorkerPool pool(builtin_pool());
    CHECK(pool.run(builtin::descriptors).get() == std::vector<int>{0, 1, 2});
  }
  ::close(leaky);
}

TEST_CASE("nothing of a pool is left in /dev/shm, and no worker outlives it", "[pool]") {
  const int before = process_support::count_shm_but_other_tests();
  std::vector<pid_t> workers;
  {
    WorkerPool pool(builtin_pool(2, 1));
    workers.push_back(pool.run(builtin::pid).get());
    CHECK(process_support::count_shm_but_other_tests() == before);
    CHECK(process_support::count_children() == 3);
  }
  CHECK(process_support::count_children() == 0);
  for (const pid_t w : workers) CHECK(process_support::wait_gone(w, 0ms));
  CHECK(process_support::count_shm_but_other_tests() == before);
}

TEST_CASE("a missing, non-executable or non-worker program fails the pool's start clearly, without respawning",
          "[pool]") {
  PoolOptions options = builtin_pool();
  SECTION("missing") {
    options.worker_program = "/nonexistent/cancellable-worker";
    CHECK_THROWS_WITH(WorkerPool(options), Catch::Matchers::Contains("No such file or directory") &&
                                               Catch::Matchers::Contains("/nonexistent/cancellable-worker"));
  }
  SECTION("not executable") {
    const TempPath file("not-executable");
    { std::ofstream(file.path) << "#!/bin/sh\n"; }
    options.worker_program = file.path;
    CHECK_THROWS_WITH(WorkerPool(options), Catch::Matchers::Contains("Permission denied"));
  }
  SECTION("not a worker") {
    options.worker_program = "/bin/true";
    CHECK_THROWS_WITH(WorkerPool(options), Catch::Matchers::Contains("exited with code 0 before it was ready") &&
                                               Catch::Matchers::Contains("worker_main"));
  }
  CHECK_THROWS_AS(WorkerPool(options), PoolStartFailed);
  CHECK(process_support::count_children() == 0);
}

TEST_CASE("a pool cannot be created inside a pool worker", "[pool]") {
  WorkerPool pool(self_pool());
  CHECK_THAT(pool.run(create_a_pool_inside_task).get(), Catch::Matchers::Contains("inside a pool worker"));
}

TEST_CASE("limits: memory, result size and argument size fail the task with their errors", "[pool]") {
  PoolOptions options = builtin_pool();
  options.memory_limit_bytes = 64 << 20;
  options.max_result_bytes = 1000;
  options.max_argument_bytes = 8000;
  WorkerPool pool(options);
  CHECK_THROWS_AS(pool.run(builtin::allocate, std::uint64_t{512} << 20).get(), MemoryLimitExceeded);
  CHECK_THROWS_AS(pool.run(builtin::echo, std::string(5000, 'x')).get(), ResultTooLarge);
  CHECK_THROWS_AS(pool.run(builtin::echo, std::string(9000, 'x')).get(), std::length_error);
  CHECK(pool.run(builtin::echo, std::string(500, 'x')).get() == std::string(500, 'x'));
}

TEST_CASE("a full queue refuses run() with PoolQueueFull, and room() completes when there is space", "[pool]") {
  PoolOptions options = self_pool(1, 0);
  options.max_queue = 1;
  WorkerPool pool(options);
  const TempPath pid_file("queue-full");
  CancellationToken spinner_token, queued_token;
  auto spinner = pool.run(write_pid_and_spin_task, pid_file.path.string(), spinner_token);
  REQUIRE(wait_for_pid_file(pid_file.path) > 0);
  auto queued = pool.run(create_file_task, pid_file.path.string() + ".q", queued_token);
  CHECK_THROWS_AS(pool.run(create_file_task, pid_file.path.string() + ".r"), PoolQueueFull);
  auto room = pool.room();
  CHECK_FALSE(room.is_ready());
  queued_token.cancel();
  CHECK(room.wait_for(60s) == std::future_status::ready);
  spinner_token.cancel();
  CHECK_THROWS_AS(spinner.get(), CancelledException);
}

TEST_CASE("a worker is recycled after the configured number of tasks", "[pool]") {
  PoolOptions options = builtin_pool(1, 0);
  options.recycle_after_tasks = 2;
  WorkerPool pool(options);
  const pid_t first = pool.run(builtin::pid).get();
  CHECK(pool.run(builtin::pid).get() == first);
  const pid_t second = pool.run(builtin::pid).get();
  CHECK(second != first);
  CHECK(pool.run(builtin::pid).get() == second);
  CHECK(pool.stats().recycles >= 1);
}

TEST_CASE("a worker recycles once its memory grew past the soft limit", "[pool]") {
  PoolOptions options = builtin_pool(1, 0);
  options.recycle_above_growth_bytes = 32 << 20;
  WorkerPool pool(options);
  const pid_t first = pool.run(builtin::pid).get();  // its baseline
  CHECK(pool.run(builtin::allocate, std::uint64_t{64} << 20).get() == std::uint64_t{64} << 20);
  CHECK(pool.run(builtin::pid).get() != first);
  CHECK(pool.stats().recycles == 1);
}

TEST_CASE("a worker killed from outside with SIGKILL mid-task fails that task as crashed", "[pool]") {
  WorkerPool pool(self_pool());
  const TempPath pid_file("outside-kill");
  auto running = pool.run(write_pid_and_spin_task, pid_file.path.string());
  const pid_t worker = wait_for_pid_file(pid_file.path);
  REQUIRE(worker > 0);
  ::kill(worker, SIGKILL);
  try {
    running.get();
    FAIL("no exception");
  } catch (const WorkerCrashed& e) {
    CHECK(e.exit().signal == SIGKILL);
  }
  CHECK(pool.run(create_a_pool_inside_task).get() != "");
}

TEST_CASE("cancelling a task that started a child kills the child too", "[pool]") {
  WorkerPool pool(builtin_pool());
  const TempPath pid_file("grandchild");
  CancellationToken token;
  auto running = pool.run(builtin::spawn_child_and_spin, pid_file.path.string(), token);
  const pid_t grandchild = wait_for_pid_file(pid_file.path);
  REQUIRE(grandchild > 0);
  token.cancel();
  CHECK_THROWS_AS(running.get(), CancelledException);
  CHECK(process_support::wait_gone(grandchild));
}

TEST_CASE("the pool's statistics count workers, tasks and their times", "[pool]") {
  WorkerPool pool(builtin_pool(2, 1));
  for (int i = 0; i < 10; ++i) pool.run(builtin::empty).get();
  const auto stats = pool.stats();
  CHECK(stats.idle + stats.starting == 3);
  CHECK(stats.busy == 0);
  CHECK(stats.tasks_run == 10);
  CHECK(stats.slot_ready == 10);
  CHECK(stats.run_time_p50_us > 0);
  CHECK(stats.run_time_p99_us >= stats.run_time_p50_us);
  CHECK(stats.queue_wait_p99_us >= stats.queue_wait_p50_us);
}

TEST_CASE("2,000 tasks with random cancellation over a pool of 2 leak nothing", "[pool]") {
  std::mt19937 random(7);
  const auto batch = [&](WorkerPool& pool, int n) {
    std::vector<Future<std::int64_t>> futures;
    for (int i = 0; i < n; ++i) {
      CancellationToken token;
      futures.push_back(pool.run(builtin::sleep_ms, std::int64_t(random() % 3), token));
      if (random() % 2) token.cancel();
    }
    for (auto& f : futures) {
      if (f.wait_for(120s) != std::future_status::ready) return false;
    }
    return true;
  };
  const int shm = process_support::count_shm_but_other_tests();
  {
    WorkerPool pool(builtin_pool(2, 1));
    REQUIRE(batch(pool, 100));  // warm up
    const int fds = process_support::count_fds();
    const int mappings = process_support::count_mappings();
    const auto heap = process_support::heap_in_use();
    REQUIRE(batch(pool, 2000));
    // Replacements start in the background: the same number of workers, and
    // of their descriptors and mappings, once they have.
    const auto settled = [&] {
      const auto s = pool.stats();
      return s.starting == 0 && s.busy == 0 && s.idle == 3;
    };
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (!settled() && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    CHECK(settled());
    CHECK(process_support::count_children() == 3);
    CHECK(process_support::count_fds() == fds);
    // Each worker's memory mapped once, for the live workers only; and, but
    // under a sanitizer (whose runtime maps regions of its own), no more
    // mappings than before but for a few (thread stacks the C library keeps).
    CHECK(process_support::count_mappings_named("cancellable-pool-worker") == 3);
    if (process_support::mapping_count_is_ours()) CHECK(process_support::count_mappings() <= mappings + 8);
    if (heap) CHECK(*process_support::heap_in_use() <= *heap + 256 * 1024);
  }
  CHECK(process_support::count_children() == 0);
  CHECK(process_support::count_shm_but_other_tests() == shm);
}

TEST_CASE("threads blocked in get() take their own task's result, while other tasks are cancelled", "[pool]") {
  // A thread in get() reads the worker's answer itself when it sees it
  // first; cancellations from other threads race with that.
  WorkerPool pool(builtin_pool(2, 1));
  constexpr int kThreads = 3;
  constexpr int kTasks = 200;
  struct Outcome {
    std::string sent, got;
    bool cancelled = false;
    bool other_error = false;
  };
  std::vector<std::vector<Outcome>> outcomes(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&pool, &outcomes, t] {
      std::mt19937 random(static_cast<unsigned>(t + 1));
      for (int i = 0; i < kTasks; ++i) {
        Outcome o;
        o.sent = std::to_string(t) + ":" + std::to_string(i);
        CancellationToken token;
        auto future = pool.run(builtin::echo, o.sent, token);
        std::thread canceller;
        if (random() % 3 == 0) canceller = std::thread([token]() mutable { token.cancel(); });
        try {
          o.got = future.get();
        } catch (const CancelledException&) {
          o.cancelled = true;
        } catch (...) {
          o.other_error = true;
        }
        if (canceller.joinable()) canceller.join();
        outcomes[static_cast<std::size_t>(t)].push_back(std::move(o));
      }
    });
  }
  for (auto& thread : threads) thread.join();
  int answered = 0, cancelled = 0, wrong = 0, other_errors = 0;
  for (const auto& list : outcomes) {
    for (const auto& o : list) {
      if (o.cancelled) ++cancelled;
      if (o.other_error) ++other_errors;
      if (!o.cancelled && !o.other_error) {
        ++answered;
        if (o.got != o.sent) ++wrong;
      }
    }
  }
  CHECK(answered + cancelled + other_errors == kThreads * kTasks);
  CHECK(wrong == 0);
  CHECK(other_errors == 0);
  CHECK(answered > 0);
  CHECK(cancelled > 0);
  CHECK(pool.stats().tasks_run >= static_cast<std::uint64_t>(answered));
}

TEST_CASE("no worker, nor what its task started, outlives its parent killed with SIGKILL, in a fork isolate as in a pool", "[pool][fork]") {
  // One body for both backends: the helper runs a task that started a child
  // (CancellableIsolate::run with Backend::process or Backend::pool) and
  // lists its own children (workers, keeper); then it is killed.
  for (const std::string backend : {"process", "pool"}) {
    INFO(backend);
    const TempPath pids_file("parent-death-" + backend);
    const std::string helper = CANCELLABLE_POOL_PARENT_HELPER;
    const std::string path = pids_file.path.string();
    char* argv[] = {const_cast<char*>(helper.c_str()), const_cast<char*>("--parent-death"),
                    const_cast<char*>(backend.c_str()), const_cast<char*>(path.c_str()), nullptr};
    pid_t parent = 0;
    REQUIRE(::posix_spawn(&parent, helper.c_str(), nullptr, nullptr, argv, environ) == 0);
    struct KillAtEnd {  // however the test ends
      pid_t pid;
      ~KillAtEnd() {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
    } kill_at_end{parent};
    REQUIRE(wait_for_pid_file(pids_file.path) > 0);
    std::vector<pid_t> children;
    {
      std::ifstream in(pids_file.path);
      for (pid_t pid = 0; in >> pid;) children.push_back(pid);
    }
    // The worker running the task (a pool: its standby too). (The keeper
    // is no child: it left its starter.)
    CHECK(children.size() == (backend == "pool" ? 2u : 1u));
    const pid_t grandchild = wait_for_pid_file(pids_file.path.string() + ".child");
    std::filesystem::remove(pids_file.path.string() + ".child");
    REQUIRE(grandchild > 0);
    for (const pid_t pid : children) CHECK_FALSE(process_support::wait_gone(pid, 0ms));
    CHECK_FALSE(process_support::wait_gone(grandchild, 0ms));
    ::kill(parent, SIGKILL);
    for (const pid_t pid : children) CHECK(process_support::wait_gone(pid, 60s));
    CHECK(process_support::wait_gone(grandchild, 60s));  // (the keeper's work)
    ::kill(grandchild, SIGKILL);  // (after a failure: leave nothing)
  }
}

TEST_CASE("making a pool forks nothing of its process: the keeper is the worker program, and later forks do not map worker memory", "[pool]") {
  const TempPath out("fresh-process");
  const std::string worker = CANCELLABLE_WORKER_PROGRAM;
  REQUIRE(pool_helper_status("--fresh-process", out.path.string()) == 0);
  std::ifstream in(out.path);
  std::string word, keeper;
  int prepares = -1, inherited = -1;
  in >> word >> prepares >> word >> keeper >> word >> inherited;
  CHECK(prepares == 0);  // (The keeper was a fork of this process: 1.)
  CHECK(std::filesystem::equivalent(keeper, worker));
  CHECK(inherited == 0);
}

TEST_CASE("idle workers beyond the pool's size exit after the idle timeout, and come back with work", "[pool]") {
  PoolOptions options = builtin_pool(1, 1);
  options.idle_timeout = 100ms;
  WorkerPool pool(options);
  CHECK(pool.stats().workers_started == 2);
  const auto eventually = [](auto pred) {
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::yield();
    }
    return true;
  };
  CHECK(eventually([&] { return pool.stats().idle_exits == 1; }));
  const auto shrunk = pool.stats();
  CHECK(shrunk.idle + shrunk.busy + shrunk.starting == 1);  // never below size
  CHECK(pool.run(builtin::empty).get() == 0);
  CHECK(eventually([&] { return pool.stats().workers_started == 3; }));  // the standby again
}

TEST_CASE("a task over its CPU time limit fails with CpuTimeLimitExceeded, and the pool goes on", "[pool]") {
  WorkerPool pool(builtin_pool(1, 0));
  TaskOptions options;
  options.cpu_time_limit = std::chrono::seconds(1);
  try {
    pool.run(builtin::spin, CancellationToken::none(), options).get();
    FAIL("no exception");
  } catch (const CpuTimeLimitExceeded& e) {
    CHECK(e.limit() == std::chrono::seconds(1));
  }
  // The limit was the task's: the next task on the next worker has none.
  CHECK(pool.run(builtin::sleep_ms, std::int64_t{1}).get() == 1);
  options.cpu_time_limit = std::chrono::seconds(0);
  CHECK_THROWS_AS(pool.run(builtin::empty, CancellationToken::none(), options), std::invalid_argument);
}

TEST_CASE("a task's child dies with its worker when the worker is killed from outside", "[pool]") {
  WorkerPool pool(builtin_pool());
  const TempPath pid_file("outside-kill-child");
  auto running = pool.run(builtin::spawn_child_and_spin, pid_file.path.string());
  const pid_t child = wait_for_pid_file(pid_file.path);
  REQUIRE(child > 0);
  const auto stat = process_support::proc_stat(child);
  REQUIRE(stat);
  ::kill(static_cast<pid_t>(stat->ppid), SIGKILL);  // the worker
  CHECK_THROWS_AS(running.get(), WorkerCrashed);
  CHECK(process_support::wait_gone(child));
}

TEST_CASE("with max_queue 0 run() succeeds while a worker is free, and room() completes when one is free again", "[pool]") {
  PoolOptions options = builtin_pool(1, 0);
  options.max_queue = 0;
  WorkerPool pool(options);
  CancellationToken token;
  auto running = pool.run(builtin::spin, token);  // (Refused with PoolQueueFull before: no waiting room.)
  CHECK_THROWS_AS(pool.run(builtin::empty), PoolQueueFull);
  auto room = pool.room();
  CHECK_FALSE(room.is_ready());
  token.cancel();  // The worker is killed; its replacement, once ready, is room.
  CHECK_NOTHROW(room.get());
  CHECK(pool.run(builtin::empty).get() == 0);
}

TEST_CASE("room() completes when a degrade empties the queue", "[pool]") {
  // A worker program that works while a file exists, then fails to start.
  const TempPath flag("works"), script("flaky-worker");
  std::ofstream(flag.path) << "1";
  {
    std::ofstream out(script.path);
    out << "#!/bin/sh\n[ -e '" << flag.path.string() << "' ] && exec '" << CANCELLABLE_WORKER_PROGRAM
        << "' \"$@\"\nexit 1\n";
  }
  std::filesystem::permissions(script.path, std::filesystem::perms::owner_all);
  PoolOptions options = builtin_pool(1, 0);
  options.worker_program = script.path;
  options.max_queue = 1;
  options.respawn_budget = 2;
  WorkerPool pool(options);
  std::filesystem::remove(flag.path);
  CancellationToken token;
  auto running = pool.run(builtin::spin, token);
  auto queued = pool.run(builtin::empty);
  auto room = pool.room();
  CHECK_FALSE(room.is_ready());
  token.cancel();  // Its worker goes; no other can start: the pool degrades.
  CHECK_THROWS_AS(queued.get(), PoolDegraded);
  CHECK_NOTHROW(room.get());
  CHECK_THROWS_AS(pool.run(builtin::empty), PoolDegraded);
}

TEST_CASE("plain data is an argument as it is a result: structs, arrays and vectors of them", "[pool]") {
  WorkerPool pool(self_pool(1, 0));
  const Point p = pool.run(moved_task, Point{1, 0.5, {7, 8, 9}}, std::vector<Point>{{2, 1.0, {}}, {3, 2.0, {}}},
                           std::string("four")).get();
  CHECK(p.x == 6);
  CHECK(p.y == 3.5);
  CHECK(p.z == std::array<int, 3>{4, 8, 9});
}

TEST_CASE("one cancel() over many tasks kills only the workers running them, and no queued task of the token starts", "[pool]") {
  // (Standby workers are ready the moment the running tasks are killed,
  // while cancel() is still notifying the queued ones.)
  WorkerPool pool(self_pool(2, 2));
  const TempPath dir("never-started");
  std::filesystem::create_directories(dir.path);
  const TempPath a("spinner-a"), b("spinner-b");
  CancellationToken token;
  auto spin_a = pool.run(write_pid_and_spin_task, a.path.string(), token);
  auto spin_b = pool.run(write_pid_and_spin_task, b.path.string(), token);
  REQUIRE(wait_for_pid_file(a.path) > 0);
  REQUIRE(wait_for_pid_file(b.path) > 0);  // Both workers run the token's tasks.
  std::vector<cancellable::Future<int>> queued;
  for (int i = 0; i < 1000; ++i)
    queued.push_back(pool.run(create_file_task, (dir.path / std::to_string(i)).string(), token));
  const auto killed_before = pool.stats().tasks_killed;
  token.cancel();
  for (auto& f : queued) CHECK_THROWS_AS(f.get(), CancelledException);
  CHECK_THROWS_AS(spin_a.get(), CancelledException);
  CHECK_THROWS_AS(spin_b.get(), CancelledException);
  CHECK(pool.run(own_pid_task).get() > 0);  // (The pool works on, with its replacements.)
  CHECK(pool.stats().tasks_killed - killed_before == 2);
  CHECK(std::filesystem::is_empty(dir.path));  // Not one queued task started.
}

TEST_CASE("a cancelled task's children die with it when its pool's process ignores SIGCHLD", "[pool]") {
  const TempPath pid_file("sigchld-ignored");
  const std::string path = pid_file.path.string();
  const pid_t parent = start_pool_helper("--sigchld-ignored", path);
  REQUIRE(parent > 0);
  struct KillAtEnd {
    pid_t pid;
    std::string marker;
    ~KillAtEnd() {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      std::filesystem::remove(marker);
    }
  } kill_at_end{parent, path + ".cancelled"};
  const pid_t grandchild = wait_for_pid_file(pid_file.path);
  REQUIRE(grandchild > 0);
  REQUIRE(wait_for_pid_file(path + ".cancelled") > 0);  // cancel() has returned; the pool lives on.
  CHECK(process_support::wait_gone(grandchild));
}

TEST_CASE("kills of starting workers from elsewhere do not degrade the pool", "[pool]") {
  // A worker program that writes its pid, then waits for a file before it
  // becomes the worker: while it waits, it is a starting worker.
  const TempPath dir("outside-kills"), script("slow-worker");
  std::filesystem::create_directories(dir.path);
  const auto go = dir.path / "go";
  {
    std::ofstream out(script.path);
    out << "#!/bin/sh\necho $$ > '" << dir.path.string() << "/pid.'$$\nwhile [ ! -e '" << go.string()
        << "' ]; do sleep 0.01; done\nexec '" << CANCELLABLE_WORKER_PROGRAM << "' \"$@\"\n";
  }
  std::filesystem::permissions(script.path, std::filesystem::perms::owner_all);
  std::ofstream(go) << "1";
  PoolOptions options = builtin_pool(1, 0);
  options.worker_program = script.path;
  options.respawn_budget = 3;
  WorkerPool pool(options);
  const pid_t ready = pool.run(builtin::pid).get();  // (The script exec'd the worker: same pid.)
  std::filesystem::remove(go);
  std::set<std::string> seen;
  for (const auto& e : std::filesystem::directory_iterator(dir.path)) seen.insert(e.path().filename());
  ::kill(ready, SIGKILL);
  // Each replacement, while it starts, killed from elsewhere: twice the budget.
  for (int kill = 0; kill < 6; ++kill) {
    pid_t victim = 0;
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (victim == 0 && std::chrono::steady_clock::now() < deadline) {
      for (const auto& e : std::filesystem::directory_iterator(dir.path)) {
        const std::string name = e.path().filename();
        if (name.starts_with("pid.") && !seen.count(name)) {
          seen.insert(name);
          victim = std::stoi(name.substr(4));
        }
      }
      std::this_thread::yield();
    }
    REQUIRE(victim > 0);
    ::kill(victim, SIGKILL);
  }
  std::ofstream(go) << "1";
  CHECK(pool.run(builtin::empty).get() == 0);  // (PoolDegraded before: five kills used the budget up.)
}

TEST_CASE("a pool that cannot start for want of descriptors leaves no process, zombie or descriptor behind", "[pool]") {
  const TempPath out("low-descriptors");
  CHECK(pool_helper_status("--low-descriptors", out.path.string()) == 0);
  std::ifstream in(out.path);
  const std::string report((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  INFO(report);
  CHECK(report.find("leaks 0\n") != std::string::npos);
  CHECK(report.find("failed 0 ") == std::string::npos);  // (Some limits were too low: the failure paths ran.)
  CHECK(report.find(" made 0 ") == std::string::npos);   // (And the highest were enough.)
}

TEST_CASE("a worker whose setup fails names the step and its errno, from a pool as from a fork isolate", "[pool]") {
  // (In a helper process: it gives up CAP_SYS_RESOURCE and lowers its hard
  // RLIMIT_DATA, so both workers' setrlimit for the memory limit fails.)
  const TempPath out("setup-failure");
  // (A worker without a sanitizer: a sanitizer's runtime reserves more than
  // the lowered limit leaves, and would end the worker before the step.)
  REQUIRE(pool_helper_status("--setup-failure", out.path.string(), CANCELLABLE_UNSANITIZED_WORKER_PROGRAM) == 0);
  std::ifstream in(out.path);
  std::string isolate_line, pool_line;
  std::getline(in, isolate_line);
  std::getline(in, pool_line);
  for (const auto& line : {isolate_line, pool_line}) {
    INFO(line);
    CHECK(line.find("could not apply its memory limit (setrlimit RLIMIT_DATA)") != std::string::npos);
    CHECK(line.find("Operation not permitted") != std::string::npos);
  }
  CHECK(isolate_line.rfind("isolate ", 0) == 0);
  CHECK(pool_line.rfind("pool ", 0) == 0);
}

TEST_CASE("a task whose worker died is counted once, as a crash, when its token is cancelled after the death", "[pool]") {
  // The cancel comes as the pool learns of the death (the pid is reaped),
  // before or after the task is concluded: each task is counted once,
  // whichever comes first.
  WorkerPool pool(self_pool(1, 1));
  const int rounds = 40;
  for (int i = 0; i < rounds; ++i) {
    const TempPath pid_file("died-then-cancelled");
    CancellationToken token;
    auto running = pool.start(write_pid_and_spin_task, pid_file.path.string(), token);
    const pid_t worker = wait_for_pid_file(pid_file.path);
    REQUIRE(worker > 0);
    ::kill(worker, SIGKILL);
    while (::kill(worker, 0) == 0) std::this_thread::yield();  // (until the pool reaped it)
    token.cancel();
    REQUIRE(error_of(running.future()) != nullptr);
    // (The future may fail with the cancel before the pool has concluded
    // the task: settled() says it has.)
    REQUIRE(running.settled().wait_for(60s) == std::future_status::ready);
  }
  const auto stats = pool.stats();
  CHECK(stats.crashes + stats.tasks_killed == rounds);
  CHECK(stats.tasks_run == 0);
}

TEST_CASE("a task cancelled while run() hands it over never starts, and its worker lives on", "[pool]") {
  // run() reserves an idle worker, then encodes the arguments (32 MiB here)
  // with no lock held; a cancel in that window must not kill the worker,
  // which never saw the task. The cancel comes from another thread once
  // the worker counts as busy: most rounds land in the window, and one is
  // enough (a round whose cancel came after the hand-over proves nothing).
  PoolOptions options = self_pool(1, 0);
  options.max_argument_bytes = 48u << 20;
  WorkerPool pool(options);
  const std::string ballast(32u << 20, 'x');
  int spared = 0;
  for (int i = 0; i < 20 && spared == 0; ++i) {
    const pid_t before = static_cast<pid_t>(pool.run(own_pid_task).get());
    const auto killed_before = pool.stats().tasks_killed;
    const TempPath marker("handed-over");
    CancellationToken token;
    std::thread canceller([&] {
      while (pool.stats().busy == 0) std::this_thread::yield();
      token.cancel();
    });
    auto task = pool.run(create_file_with_ballast_task, marker.path.string(), ballast, token);
    canceller.join();
    REQUIRE(error_of(task) != nullptr);
    CHECK_THROWS_AS(task.get(), CancelledException);
    const pid_t after = static_cast<pid_t>(pool.run(own_pid_task).get());
    if (!std::filesystem::exists(marker.path) && after == before) {
      CHECK(pool.stats().tasks_killed == killed_before);
      ++spared;
    }
  }
  CHECK(spared == 1);
}

TEST_CASE("a worker that run() is handing a task to never exits for being idle", "[pool]") {
  // With a short idle timeout and arguments that take long to write, the
  // worker's idle wait ends while run() posts the task; a second run() from
  // another thread meanwhile brings the standby back, so that more than
  // `size` workers are up. The worker being handed the task is busy, not
  // idle: if it left, its task would never be answered.
  PoolOptions options = self_pool(1, 1);
  options.idle_timeout = 1ms;
  options.max_argument_bytes = 160u << 20;
  WorkerPool pool(options);
  const std::string ballast(128u << 20, 'x');
  for (int i = 0; i < 5; ++i) {
    std::optional<Future<int>> other;
    std::thread second([&] {
      while (pool.stats().busy == 0) std::this_thread::yield();
      other.emplace(pool.run(own_pid_task));
    });
    auto task = pool.run(create_file_with_ballast_task, std::string("/dev/null"), ballast);
    second.join();
    REQUIRE(task.wait_for(60s) == std::future_status::ready);
    CHECK(task.get() == 1);
    REQUIRE(other->wait_for(60s) == std::future_status::ready);
    CHECK(other->get() > 0);
  }
}

TEST_CASE("a worker's failures are caught as WorkerFailed on both backends, and the pool's own errors as PoolError", "[pool][fork]") {
  // One test body for the fork isolate and the pool: each failure of the
  // worker (crash, memory limit, result too large, CPU limit) in one clause.
  const auto failure_of = [](auto&& future) -> std::string {
    try {
      (void)future.get();
    } catch (const WorkerFailed& e) {
      return std::string("WorkerFailed: ") + e.what();
    } catch (const std::exception& e) {
      return std::string("other: ") + e.what();
    }
    return "no failure";
  };
  PoolOptions limited = builtin_pool(1, 0);
  limited.memory_limit_bytes = std::size_t{256} << 20;
  limited.max_result_bytes = 1024;
  WorkerPool pool(limited);
  TaskOptions cpu;
  cpu.cpu_time_limit = std::chrono::seconds(1);
  IsolateOptions forked;
  forked.backend = Backend::process;
  forked.memory_limit_bytes = std::size_t{256} << 20;
  forked.max_result_bytes = 1024;
  IsolateOptions forked_cpu;
  forked_cpu.backend = Backend::process;
  forked_cpu.cpu_time_limit = std::chrono::seconds(1);
  const std::vector<std::pair<std::string, std::string>> failures = {
      {"pool crash", failure_of(pool.run(builtin::crash, SIGSEGV))},
      {"pool memory", failure_of(pool.run(builtin::allocate, std::uint64_t{512} << 20))},
      {"pool result", failure_of(pool.run(builtin::echo, std::string(4096, 'r')))},
      {"pool cpu", failure_of(pool.run(builtin::spin, CancellationToken::none(), cpu))},
      {"fork crash", failure_of(CancellableIsolate::run([]() -> int { std::abort(); }, CancellationToken::none(), forked))},
      {"fork memory", failure_of(CancellableIsolate::run([] { return std::string(std::size_t{512} << 20, 'm').size(); },
                                                         CancellationToken::none(), forked))},
      {"fork result", failure_of(CancellableIsolate::run([] { return std::string(4096, 'r'); }, CancellationToken::none(), forked))},
      {"fork cpu", failure_of(CancellableIsolate::run([] {
                                test_support::burn_cpu_forever();
                                return 0;
                              }, CancellationToken::none(), forked_cpu))},
  };
  for (const auto& [what, failure] : failures) {
    INFO(what);
    CHECK(failure.rfind("WorkerFailed: ", 0) == 0);
  }
  // The pool's own errors.
  PoolOptions bad = builtin_pool(1, 0);
  bad.worker_program = "/nonexistent/cancellable-worker";
  CHECK_THROWS_AS(WorkerPool(bad), PoolError);
  PoolOptions no_queue = builtin_pool(1, 0);
  no_queue.max_queue = 0;
  WorkerPool small(no_queue);
  CancellationToken token;
  auto busy = small.run(builtin::spin, token);
  CHECK_THROWS_AS(small.run(builtin::empty), PoolError);
  token.cancel();
}

TEST_CASE("isolates and every pool share one reaper thread: a pool adds its spawner and one driver per worker, no more", "[pool][fork]") {
  // (A fork isolate's run starts the reaper if no earlier test did.)
  IsolateOptions forked;
  forked.backend = Backend::process;
  CHECK(CancellableIsolate::run([] { return 1; }, CancellationToken::none(), forked).get() == 1);
  // The drivers of earlier tests' pools end a little after those pools.
  REQUIRE(process_support::eventually([] { return process_support::threads_named("cancel-driver") == 0; }));
  const std::string unnamed = process_support::thread_name_list().front();  // (the main thread's: the program's)
  const int unnamed_before = process_support::threads_named(unnamed);
  {
    WorkerPool a(builtin_pool(1, 1));
    WorkerPool b(builtin_pool(2, 0));
    CHECK(a.run(builtin::empty).get() == 0);
    CHECK(b.run(builtin::empty).get() == 0);
    CHECK(CancellableIsolate::run([] { return 2; }, CancellationToken::none(), forked).get() == 2);
    CHECK(process_support::threads_named("cancel-reaper") == 1);
    CHECK(process_support::threads_named("cancel-spawner") == 2);
    CHECK(process_support::threads_named("cancel-driver") == 4);
    CHECK(process_support::threads_named(unnamed) == unnamed_before);
  }
  CHECK(process_support::threads_named("cancel-reaper") == 1);
}

TEST_CASE("report_progress in a task reaches the caller from a pool worker as from a fork isolate", "[pool][fork]") {
  WorkerPool pool(self_pool(1, 0));
  // One body for both backends: the callback sees half way, and the run is
  // cancelled once it did.
  const auto run_half_way = [&](Backend backend) {
    auto seen = std::make_shared<std::vector<Progress>>();
    auto mutex = std::make_shared<std::mutex>();
    auto reached = std::make_shared<test_support::Event>();
    IsolateOptions options;
    options.backend = backend;
    if (backend == Backend::pool) options.pool = &pool;
    options.progress_interval = 1ms;
    options.on_progress = [seen, mutex, reached](const Progress& p) {
      std::lock_guard lock(*mutex);
      seen->push_back(p);
      if (p.done == 5) reached->set();
    };
    CancellationToken token;
    auto future = CancellableIsolate::run(report_half_way_then_spin_task, token, options);
    const bool reached_half = reached->wait(120s);
    token.cancel();
    CHECK_THROWS_AS(future.get(), CancelledException);
    std::lock_guard lock(*mutex);
    return std::make_pair(reached_half, *seen);
  };
  for (const Backend backend : {Backend::process, Backend::pool}) {
    INFO(to_string(backend));
    const auto [reached_half, seen] = run_half_way(backend);
    CHECK(reached_half);
    REQUIRE_FALSE(seen.empty());
    CHECK(seen.front() == Progress{5, 10, "half way"});
  }
}

TEST_CASE("a pool task's progress is its own: read while it runs, kept once it ends, never the task's before", "[pool]") {
  WorkerPool pool(self_pool(1, 0));
  // The pool's handle reads it while the task runs, and keeps the last
  // value once the task is over; on_progress hears it too.
  auto heard = std::make_shared<test_support::Event>();
  TaskOptions watched;
  watched.progress_interval = 1ms;
  watched.on_progress = [heard](const Progress& p) {
    if (p == Progress{5, 10, "half way"}) heard->set();
  };
  CancellationToken token;
  auto run = pool.start(report_half_way_then_spin_task, token, watched);
  CHECK(process_support::eventually([&] { return run.progress().has_value(); }));
  CHECK(heard->wait(120s));
  CHECK(run.progress() == Progress{5, 10, "half way"});
  token.cancel();
  CHECK(run.settled().wait_for(120s) == std::future_status::ready);
  CHECK(run.progress() == Progress{5, 10, "half way"});
  // Each task's own: a task that reports nothing shows nothing of the one
  // before it on the same worker, and a task's last report is kept.
  auto first = pool.start(report_once_task, 7);
  CHECK(first.future().get() == 7);
  CHECK(first.progress() == Progress{7, 100, "once"});
  auto quiet = pool.start(own_pid_task);
  const int worker = quiet.future().get();
  CHECK(quiet.settled().wait_for(120s) == std::future_status::ready);
  CHECK_FALSE(quiet.progress().has_value());
  auto second = pool.start(report_once_task, 9);
  CHECK(second.future().get() == 9);
  CHECK(pool.run(own_pid_task).get() == worker);  // (all on the same worker)
  CHECK(second.progress() == Progress{9, 100, "once"});
  CHECK(first.progress() == Progress{7, 100, "once"});
  // A task's on_progress with a non-positive interval is refused up front.
  TaskOptions bad;
  bad.on_progress = [](const Progress&) {};
  bad.progress_interval = 0ms;
  CHECK_THROWS_AS(pool.run(own_pid_task, CancellationToken::none(), bad), std::invalid_argument);
}

TEST_CASE("a task that ignores SIGXCPU still ends at its CPU time limit, in a pool worker as in a fork isolate", "[pool][fork]") {
  // One enforcement for both: SIGXCPU at the limit, SIGKILL from the kernel
  // one second later; both fail the task with CpuTimeLimitExceeded.
  WorkerPool pool(self_pool(1, 0));
  for (const Backend backend : {Backend::process, Backend::pool}) {
    INFO(to_string(backend));
    IsolateOptions options;
    options.backend = backend;
    if (backend == Backend::pool) options.pool = &pool;
    options.cpu_time_limit = std::chrono::seconds(1);
    auto future = CancellableIsolate::run(ignore_sigxcpu_and_spin_task, CancellationToken::none(), options);
    REQUIRE(future.wait_for(120s) == std::future_status::ready);
    CHECK_THROWS_AS(future.get(), CpuTimeLimitExceeded);
  }
  // The pool goes on, with a fresh worker (the limit stays with the old one).
  CHECK(pool.run(own_pid_task).get() > 0);
  CHECK(pool.stats().crashes == 1);
}

TEST_CASE("settled() means the same on an isolate and on a pool task: nothing of the run is running any more", "[pool][fork]") {
  WorkerPool pool(self_pool(1, 0));
  const TempPath pid_file("settled");
  CancellationToken pool_token;
  auto pool_run = pool.start(write_pid_and_spin_task, pid_file.path.string(), pool_token);
  const pid_t worker = wait_for_pid_file(pid_file.path);
  REQUIRE(worker > 0);
  CancellationToken isolate_token;
  IsolateOptions forked;
  forked.backend = Backend::process;
  auto isolate = CancellableIsolate::spawn([] {
    test_support::burn_cpu_forever();
    return 0;
  }, isolate_token, forked);
  const pid_t child = isolate.pid();
  REQUIRE(child > 0);
  CHECK_FALSE(pool_run.settled().is_ready());
  CHECK_FALSE(isolate.settled().is_ready());
  pool_token.cancel();
  isolate_token.cancel();
  for (const auto& [settled, pid] : {std::pair{pool_run.settled(), worker}, std::pair{isolate.settled(), child}}) {
    REQUIRE(settled.wait_for(120s) == std::future_status::ready);
    CHECK_NOTHROW(settled.get());
    CHECK(::kill(pid, 0) != 0);  // (reaped: no such process, not even a zombie)
  }
}

TEST_CASE("what a cancelled task started dies with it, in a pool worker as in a fork isolate", "[pool][fork]") {
  WorkerPool pool(self_pool(1, 0));
  for (const Backend backend : {Backend::process, Backend::pool}) {
    INFO(to_string(backend));
    const TempPath pid_file(std::string("descendant-") + to_string(backend));
    IsolateOptions options;
    options.backend = backend;
    if (backend == Backend::pool) options.pool = &pool;
    CancellationToken token;
    auto future = CancellableIsolate::run(start_child_and_spin_task, pid_file.path.string(), token, options);
    const pid_t child = wait_for_pid_file(pid_file.path);
    REQUIRE(child > 0);
    token.cancel();
    CHECK_THROWS_AS(future.get(), CancelledException);
    const bool gone = process_support::wait_gone(child, std::chrono::seconds(120));
    CHECK(gone);
    if (!gone) ::kill(child, SIGKILL);  // (after a failure: leave nothing)
  }
}
