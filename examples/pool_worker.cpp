// A program that is its own pool's worker program: main() first lets
// worker_main serve a pool (when a pool started it), then, started by a
// person, makes a pool of itself, runs a task, and kills a runaway one.
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <string>

#include <cancellable/cancellable.hpp>
#include <cancellable/pool.hpp>
#include <cancellable/task.hpp>

// Declared where both sides see it: a name and a signature.
inline constexpr cancellable::Task<std::uint64_t(std::uint64_t)> collatz_steps{"example.collatz_steps"};
inline constexpr cancellable::Task<int()> runaway{"example.runaway"};

// Defined, and registered, in the worker program (this one).
std::uint64_t count_collatz_steps(std::uint64_t n) {
  std::uint64_t steps = 0;
  for (; n != 1; ++steps) n = n % 2 ? 3 * n + 1 : n / 2;
  return steps;
}
int loop_forever() {
  for (;;) {
    asm volatile("" ::: "memory");  // (an empty endless loop would be undefined behaviour)
  }
}
CANCELLABLE_TASK(collatz_steps, count_collatz_steps);
CANCELLABLE_TASK(runaway, loop_forever);

int main(int argc, char** argv) {
  cancellable::worker_main(argc, argv);  // first thing: serves a pool, or returns

  cancellable::PoolOptions options;  // worker_program left empty: this program (it calls worker_main)
  options.size = 2;
  cancellable::WorkerPool pool(options);

  std::cout << "steps for 27 in a worker: " << pool.run(collatz_steps, std::uint64_t{27}).get() << "\n";

  cancellable::TaskOptions deadline;
  deadline.timeout = std::chrono::milliseconds(100);
  try {
    pool.run(runaway, cancellable::CancellationToken::none(), deadline).get();
  } catch (const cancellable::TimeoutException&) {
    std::cout << "runaway task killed at its deadline\n";
  }
  std::cout << "steps for 97 on the next worker: " << pool.run(collatz_steps, std::uint64_t{97}).get() << "\n";
}
