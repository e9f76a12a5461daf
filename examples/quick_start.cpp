#include <cancellable/cancellable.hpp>

#include <chrono>
#include <iostream>

using namespace cancellable;

long spin_forever() {
  for (volatile long i = 0;;) i = i + 1;
}

int main() {
  // A computation that never returns, in a worker process, under a deadline.
  TimeoutCancellationToken deadline(std::chrono::milliseconds(100));
  auto runaway = CancellableIsolate::run(spin_forever, deadline);
  try { runaway.get(); } catch (const TimeoutException&) { std::cout << "runaway loop killed at its deadline\n"; }

  // Two computations under one token, waited for together.
  CancellationToken token;
  auto sum = CancellableIsolate::run([] { long s = 0; for (long i = 1; i <= 1000; ++i) s += i; return s; }, token);
  auto square = CancellableIsolate::run([] { return 12L * 12L; }, token);
  auto [a, b] = when_all(sum, square).get();
  std::cout << "sum " << a << ", square " << b << "\n";
}
