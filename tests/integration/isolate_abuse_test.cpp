// Isolates under abuse: cancellations aimed at the narrow windows of a run's
// start and of a waiter's hand-over, and the failures that may follow a fork.
#include "cancellable/isolate.hpp"

#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "cancellable/exceptions.hpp"
#include "helpers/process_support.hpp"
#include "helpers/test_support.hpp"

using namespace cancellable;
using namespace std::chrono_literals;

namespace {

[[noreturn]] void pause_forever() {
  for (;;) ::pause();
}

void spin(unsigned iterations) {
  std::atomic<unsigned> sink{0};
  for (unsigned i = 0; i < iterations; ++i) sink.store(i, std::memory_order_relaxed);
}

}  // namespace

TEST_CASE("every isolate handle's exited() completes, even when the token is cancelled while the "
          "run starts",
          "[isolate][cancel]") {
  // A timeout of zero cancels on the timer thread while spawn() runs; a
  // second thread cancels the caller's token at random moments too.
  std::mt19937 random(9);
  std::vector<Future<ProcessExit>> exits;
  for (int i = 0; i < 1500; ++i) {
    CancellationToken token;
    IsolateOptions options;
    options.timeout = std::chrono::nanoseconds(random() % 2000);
    const unsigned delay = random() % 4000;
    std::thread canceller([token, delay] {
      spin(delay);
      token.cancel();
    });
    exits.push_back(CancellableIsolate::spawn([] { return 1; }, token, options).exited());
    canceller.join();
  }
  int never_completed = 0;
  const auto deadline = std::chrono::steady_clock::now() + test_support::kDeadline;
  for (const auto& exited : exits) {
    const auto left = std::max(deadline - std::chrono::steady_clock::now(), 0ns);
    if (exited.wait_for(left) != std::future_status::ready) ++never_completed;
  }
  CHECK(never_completed == 0);
  CHECK(process_support::count_children() == 0);
}

TEST_CASE("a cancel that lands while a waiter starts helping wakes it at once: it never reaps the "
          "killed worker itself",
          "[isolate][cancel]") {
  // get() may wait for the worker's exit itself. A cancellation that lands
  // between the waiter announcing that and taking the run's lock must still
  // end the wait at once, leaving the kill's teardown and the reap to the
  // reaper thread. Who completed exited() tells: the waiter would complete it
  // on its own thread (running the continuation inline), the reaper hands the
  // continuation to the default executor.
  std::mt19937 random(4);
  int reaped_by_waiter = 0;
  int cancelled = 0;
  for (int i = 0; i < 600 && reaped_by_waiter == 0; ++i) {
    CancellationToken token;
    auto isolate = CancellableIsolate::spawn([] { pause_forever(); }, token);
    auto exit_thread = std::make_shared<std::thread::id>();
    auto exit_seen = std::make_shared<test_support::Event>();
    isolate.exited().state()->subscribe([exit_thread, exit_seen] {
      *exit_thread = std::this_thread::get_id();
      exit_seen->set();
    });
    std::atomic<bool> go{false};
    std::thread::id waiter_id;
    bool threw = false;
    std::thread waiter([&] {
      waiter_id = std::this_thread::get_id();
      while (!go.load()) {
      }
      try {
        isolate.future().get();
      } catch (const CancelledException&) {
        threw = true;
      }
    });
    const unsigned delay = random() % 3000;
    go.store(true);
    spin(delay);
    token.cancel();
    waiter.join();
    REQUIRE(exit_seen->wait());
    if (threw) ++cancelled;
    if (*exit_thread == waiter_id) ++reaped_by_waiter;
  }
  CHECK(cancelled > 0);
  CHECK(reaped_by_waiter == 0);
  CHECK(process_support::count_children() == 0);
}
