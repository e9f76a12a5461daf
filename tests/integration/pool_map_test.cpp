// WorkerPool::map: inputs in chunks, results in input order, one cancel for
// every chunk, and a failure that names its input. This test binary is its
// pools' worker program (PoolOptions::worker_program left empty).
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <numeric>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "cancellable/exceptions.hpp"
#include "cancellable/isolate_errors.hpp"
#include "cancellable/pool.hpp"
#include "support/process_support.hpp"

using namespace cancellable;
using namespace std::chrono_literals;

namespace {

// -1 kills the worker, -2 never returns, -3 throws; the rest are squared.
std::int64_t square(std::int64_t x) {
  if (x == -1) ::raise(SIGKILL);
  if (x == -2) {
    for (;;) ::pause();
  }
  if (x == -3) throw std::invalid_argument("-3 is unlucky");
  return x * x;
}
constexpr Task<std::int64_t(std::int64_t)> square_task{"test.map.square"};
CANCELLABLE_TASK(square_task, square);

std::string joined(std::string a, int b) { return a + ":" + std::to_string(b); }
constexpr Task<std::string(std::string, int)> joined_task{"test.map.joined"};
CANCELLABLE_TASK(joined_task, joined);

void nothing(int) {}
constexpr Task<void(int)> nothing_task{"test.map.nothing"};
CANCELLABLE_TASK(nothing_task, nothing);

PoolOptions this_program(std::size_t size = 2, std::size_t standby = 0) {
  PoolOptions options;
  options.size = size;
  options.standby = standby;
  return options;
}

std::vector<std::int64_t> iota(std::int64_t n) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

}  // namespace

TEST_CASE("map returns every result in input order, in as many tasks as there are chunks", "[map][pool]") {
  WorkerPool pool(this_program());
  const auto inputs = iota(1000);
  std::uint64_t tasks_before = pool.stats().tasks_run;
  for (const std::size_t chunk : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{1000}}) {
    INFO("chunk_size " << chunk);
    MapOptions options;
    options.chunk_size = chunk;
    const auto results = pool.map(square_task, inputs, CancellationToken::none(), options).get();
    REQUIRE(results.size() == inputs.size());
    for (std::size_t i = 0; i < inputs.size(); ++i) REQUIRE(results[i] == inputs[i] * inputs[i]);
    // The default: ceil(1000 / (4 x 2 workers)) = 125 inputs a chunk, 8 chunks.
    const std::uint64_t expected_chunks = chunk == 0 ? 8 : (1000 + chunk - 1) / chunk;
    CHECK(pool.stats().tasks_run - tasks_before == expected_chunks);
    tasks_before = pool.stats().tasks_run;
  }
}

TEST_CASE("map takes tuples for a task of several arguments, and gives a Future<void> for a void task", "[map][pool]") {
  WorkerPool pool(this_program());
  std::vector<std::tuple<std::string, int>> inputs{{"a", 1}, {"b", 2}, {"c", 3}};
  CHECK(pool.map(joined_task, inputs).get() == std::vector<std::string>{"a:1", "b:2", "c:3"});
  Future<void> done = pool.map(nothing_task, std::vector<int>{1, 2, 3});
  CHECK_NOTHROW(done.get());
  CHECK(pool.map(square_task, std::vector<std::int64_t>{}).get().empty());
}

TEST_CASE("an input that throws fails the map with its index and its exception, and the other chunks are stopped",
          "[map][pool]") {
  WorkerPool pool(this_program());
  // Six chunks of one, two workers: -2 never returns and holds one worker,
  // the other runs 10, 11, 12, then -3 throws.
  std::vector<std::int64_t> inputs{-2, 10, 11, 12, -3, 14};
  MapOptions options;
  options.chunk_size = 1;
  auto map = pool.map(square_task, inputs, CancellationToken::none(), options);
  try {
    map.get();
    FAIL("the map succeeded");
  } catch (const MapInputFailed& e) {
    CHECK(e.index() == 4);
    CHECK_THROWS_AS(std::rethrow_exception(e.cause()), std::invalid_argument);
    CHECK_THAT(e.what(), Catch::Contains("input 4") && Catch::Contains("-3 is unlucky"));
  }
  // The spinning chunk was cancelled: its worker is killed and replaced.
  CHECK(process_support::eventually([&] { return pool.stats().tasks_killed == 1 && pool.stats().busy == 0; }));
  CHECK(pool.run(square_task, 3).get() == 9);
}

TEST_CASE("a worker that dies inside a chunk fails the map with the index of the input it was running", "[map][pool]") {
  WorkerPool pool(this_program());
  MapOptions options;
  options.chunk_size = 100;
  auto inputs = iota(100);
  inputs[57] = -1;
  // (The future is kept while its exception is examined: the exception's
  // last reference must not go with a temporary on another thread, which
  // ThreadSanitizer, blind to libstdc++'s own atomic count, reports.)
  auto map = pool.map(square_task, inputs, CancellationToken::none(), options);
  try {
    (void)map.get();
    FAIL("the map succeeded");
  } catch (const MapInputFailed& e) {
    CHECK(e.index() == 57);
    CHECK_THROWS_AS(std::rethrow_exception(e.cause()), WorkerCrashed);
  }
  CHECK(pool.map(square_task, iota(10)).get().back() == 81);
}

TEST_CASE("one cancel fails the map at once and stops its running and queued chunks", "[map][pool]") {
  WorkerPool pool(this_program());
  CancellationToken token;
  MapOptions options;
  options.chunk_size = 1;
  std::vector<std::int64_t> inputs(10, -2);  // ten chunks that never return
  auto map = pool.map(square_task, inputs, token, options);
  REQUIRE(process_support::eventually([&] { return pool.stats().busy == 2; }));
  CHECK(pool.stats().queued == 8);
  token.cancel();
  REQUIRE(map.is_ready());
  CHECK(map.exception() == token.exception());
  CHECK_FALSE(token.has_cancellables());
  // Only the two running chunks' workers were killed; the queued never started.
  CHECK(process_support::eventually([&] { return pool.stats().queued == 0 && pool.stats().busy == 0; }));
  CHECK(pool.stats().tasks_killed == 2);
  CHECK(pool.stats().tasks_run == 0);

  CancellationToken cancelled;
  cancelled.cancel();
  CHECK(pool.map(square_task, inputs, cancelled).exception() == cancelled.exception());
}

TEST_CASE("map's timeout covers the whole map", "[map][pool]") {
  WorkerPool pool(this_program());
  MapOptions options;
  options.task.timeout = 50ms;
  auto map = pool.map(square_task, std::vector<std::int64_t>{1, -2, 3}, CancellationToken::none(), options);
  CHECK_THROWS_AS(map.get(), TimeoutException);
  options.task.timeout.reset();
  options.task.on_progress = [](const Progress&) {};
  CHECK_THROWS_AS(pool.map(square_task, iota(3), CancellationToken::none(), options), std::invalid_argument);
}
