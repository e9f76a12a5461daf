// Many tasks under one token, and many tiny tasks (see bench/README.md):
// pool_throughput and batch_cancel, each with its baselines measured in the
// same run.
#include <cstdint>
#include <memory>
#include <numeric>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "bench/measure.hpp"
#include "bench/pool_support.hpp"
#include "bench/scenarios.hpp"
#include "cancellable/builtin_tasks.hpp"
#include "cancellable/pool.hpp"
#include "cancellable/when.hpp"

namespace cancellable::bench {

namespace {

constexpr std::int64_t kThroughputTasks = 20000;

// Two worker programs fed by hand through the pool's protocol, one thread
// each, every task posted as soon as the last answer came: the floor of
// run() per task on two workers. Microseconds per task.
double raw_two_workers_once(RawWorker& a, RawWorker& b) {
  const auto feed = [](RawWorker& worker, std::int64_t first, std::int64_t count) {
    for (std::int64_t i = first; i < first + count; ++i) {
      worker.wait_answer(worker.post(builtin::identity.name, std::tuple<std::int64_t>{i}));
    }
  };
  const auto start = Clock::now();
  std::thread other([&] { feed(b, kThroughputTasks / 2, kThroughputTasks / 2); });
  feed(a, 0, kThroughputTasks / 2);
  other.join();
  return us_between(start, Clock::now()) / kThroughputTasks;
}

double run_per_task_once(WorkerPool& pool) {
  const auto start = Clock::now();
  std::vector<Future<std::int64_t>> futures;
  futures.reserve(kThroughputTasks);
  for (std::int64_t i = 0; i < kThroughputTasks; ++i) futures.push_back(pool.run(builtin::identity, i));
  // (One wait for all of them: a get() per future would wake this thread
  // 20,000 times, on a machine of two cores that the workers and their
  // drivers need.)
  const auto values = when_all(futures).get();
  sink.fetch_add(static_cast<std::uint64_t>(values.back()), std::memory_order_relaxed);
  return us_between(start, Clock::now()) / kThroughputTasks;
}

double map_once(WorkerPool& pool, const std::vector<std::int64_t>& inputs) {
  const auto start = Clock::now();
  const auto results = pool.map(builtin::identity, inputs).get();
  sink.fetch_add(static_cast<std::uint64_t>(results.back()), std::memory_order_relaxed);
  return us_between(start, Clock::now()) / kThroughputTasks;
}

}  // namespace

std::vector<Row> pool_throughput(const Settings& settings) {
  const std::size_t rounds = settings.quick ? 3 : 10;
  PoolOptions options = pool_options(2, 0);
  options.max_queue = kThroughputTasks;  // (all 20,000 queued at once)
  WorkerPool pool(options);
  settle(pool, 2);
  RawWorker a, b;
  std::vector<std::int64_t> inputs(kThroughputTasks);
  std::iota(inputs.begin(), inputs.end(), 0);
  std::vector<double> raw, run, map;
  for (std::size_t r = 0; r < rounds; ++r) {
    raw.push_back(raw_two_workers_once(a, b));
    run.push_back(run_per_task_once(pool));
    map.push_back(map_once(pool, inputs));
  }
  auto baseline = make_row("pool_throughput", "raw_two_workers", std::move(raw));
  auto per_task = make_row("pool_throughput", "run_per_task", std::move(run));
  compare(per_task, baseline);
  per_task.goal = Goal{"tasks/s >= 0.8x raw_two_workers (us per task p50 <= 1.25x)", *per_task.ratio_p50 <= 1.25};
  auto mapped = make_row("pool_throughput", "map", std::move(map));
  compare(mapped, per_task);
  mapped.goal = Goal{"tasks/s >= 10x run_per_task (us per task p50 <= 0.1x)", *mapped.ratio_p50 <= 0.1};
  return {std::move(baseline), std::move(per_task), std::move(mapped)};
}

std::vector<Row> batch_cancel(const Settings& settings) {
  constexpr std::size_t kTasks = 1000;
  const std::size_t rounds = settings.quick ? 20 : 100;
  WorkerPool pool(pool_options(2, 1));
  settle(pool, 3);
  std::vector<std::unique_ptr<Noop>> noops;
  for (std::size_t i = 0; i < kTasks; ++i) noops.push_back(std::make_unique<Noop>());
  std::vector<double> notify, failed, roundtrip, next;
  std::size_t exact_kills = 0;
  for (std::size_t r = 0; r < rounds; ++r) {
    {
      CancellationToken token;
      for (auto& n : noops) n->maybe_attach(token);
      const auto start = Clock::now();
      token.cancel();
      notify.push_back(us_between(start, Clock::now()));
    }
    {
      const auto start = Clock::now();
      (void)pool.run(builtin::empty).get();
      roundtrip.push_back(us_between(start, Clock::now()));
    }
    CancellationToken token;
    std::vector<Future<int>> futures;
    futures.reserve(kTasks);
    for (std::size_t i = 0; i < kTasks; ++i) futures.push_back(pool.run(builtin::spin, token));
    while (pool.stats().busy < 2) std::this_thread::yield();
    const auto killed_before = pool.stats().tasks_killed;
    const auto start = Clock::now();
    token.cancel();
    for (const auto& f : futures) f.wait();
    failed.push_back(us_between(start, Clock::now()));
    (void)pool.run(builtin::empty).get();  // on the standby: no spawn waited for
    next.push_back(us_between(start, Clock::now()));
    settle(pool, 3);
    if (pool.stats().tasks_killed - killed_before == 2) ++exact_kills;
  }
  auto notify_row = make_row("batch_cancel", "cancel_notify_1000", std::move(notify));
  auto failed_row = make_row("batch_cancel", "every_future_failed_1000", std::move(failed));
  set_p99_ratio_goal(failed_row, notify_row, 2.0);
  std::ostringstream kills;
  kills << ", and workers killed = the 2 running the token's tasks in " << exact_kills << " of " << rounds << " rounds";
  failed_row.goal->text += kills.str();
  failed_row.goal->met = failed_row.goal->met && exact_kills == rounds;
  auto roundtrip_row = make_row("batch_cancel", "empty_roundtrip", std::move(roundtrip));
  auto next_row = make_row("batch_cancel", "cancel_to_next_result", std::move(next));
  compare(next_row, roundtrip_row);
  next_row.goal = Goal{"p50 <= 3x empty_roundtrip p50", *next_row.ratio_p50 <= 3.0};
  return {std::move(notify_row), std::move(failed_row), std::move(roundtrip_row), std::move(next_row)};
}

}  // namespace cancellable::bench
