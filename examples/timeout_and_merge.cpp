// A computation under a 100 ms deadline, and a request merged with a shutdown
// token. Both computations run on the default executor and watch a
// std::stop_token, so they stop as soon as their token is cancelled.
#include <cancellable/cancellable.hpp>

#include <chrono>
#include <iostream>
#include <stop_token>

using namespace std::chrono_literals;
using cancellable::CancellableFuture;

namespace {

// Stands for real work: counts until asked to stop.
long count_until_stopped(std::stop_token stop) {
  long steps = 0;
  while (!stop.stop_requested()) ++steps;
  return steps;
}

double ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main() {
  // 1. A deadline: the token cancels itself with a TimeoutException.
  cancellable::TimeoutCancellationToken deadline(100ms);
  const auto start = std::chrono::steady_clock::now();
  auto runaway = CancellableFuture::from(count_until_stopped, deadline);
  try {
    runaway.get();
  } catch (const cancellable::TimeoutException& e) {
    std::cout << "timeout token cancelled the computation after " << ms_since(start)
              << " ms: " << e.what() << "\n";
  }

  // 2. A request that stops when the user cancels or the server shuts down.
  cancellable::CancellationToken user;
  cancellable::CancellationToken shutdown;
  cancellable::MergedCancellationToken request{user, shutdown};
  auto work = CancellableFuture::from(count_until_stopped, request);
  shutdown.cancel_with_reason("server shutting down");
  try {
    work.get();
  } catch (const cancellable::CancelledException& e) {
    std::cout << "merged token cancelled the computation: " << e.what() << "\n";
  }
  std::cout << "left attached to the user token: " << (user.has_cancellables() ? "yes" : "no")
            << "\n";
  return 0;
}
