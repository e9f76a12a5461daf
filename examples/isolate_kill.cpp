// Work that cannot cooperate, run in a worker process: a runaway loop that
// never checks a token is killed when its deadline passes, and a crash in
// the worker leaves this process unharmed.
#include <cancellable/cancellable.hpp>

#include <chrono>
#include <cstdlib>
#include <iostream>

using namespace std::chrono_literals;
using cancellable::CancellableIsolate;

namespace {

// Stands for a parser stuck in a loop: it never looks at any token.
long runaway() {
  volatile long steps = 0;
  for (;;) steps = steps + 1;
}

}  // namespace

int main() {
  // 1. A runaway loop under a 100 ms deadline: the worker is SIGKILLed.
  cancellable::TimeoutCancellationToken deadline(100ms);
  const auto start = std::chrono::steady_clock::now();
  auto isolate = CancellableIsolate::spawn(runaway, deadline);
  try {
    isolate.future().get();
  } catch (const cancellable::TimeoutException& e) {
    const auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start);
    std::cout << "runaway worker stopped after " << ms.count() << " ms: " << e.what() << "\n";
  }
  std::cout << "worker " << isolate.exited().get().str() << "\n";

  // 2. A worker that crashes: only its own run fails.
  auto crash = CancellableIsolate::run([]() -> int { std::abort(); });
  try {
    crash.get();
  } catch (const cancellable::WorkerCrashed& e) {
    std::cout << e.what() << "\n";
  }

  // 3. A result comes back through shared memory.
  auto sum = CancellableIsolate::run([] {
    long total = 0;
    for (long i = 1; i <= 1000; ++i) total += i;
    return total;
  });
  std::cout << "sum computed in a worker: " << sum.get() << "\n";
  return 0;
}
