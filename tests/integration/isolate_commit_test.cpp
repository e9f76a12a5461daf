// Outcomes delivered at commit (LaunchSpec::deliver_at_commit, which the JSON
// functions use): the worker signals that its outcome is written, and the
// caller gets it without waiting for the worker's exit; the worker is still
// reaped, and nothing is left behind.
#include "cancellable/isolate.hpp"

#include <catch2/catch.hpp>

#include <signal.h>

#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "cancellable/exceptions.hpp"
#include "support/spin.hpp"
#include "support/process_support.hpp"
#include "support/test_support.hpp"
#include "worker/test_seams.hpp"

using namespace cancellable;
using namespace std::chrono_literals;

namespace {

// The gate that committed workers wait at before _exit (see
// detail::set_child_exit_hook, which takes a plain function).
process_support::SharedGate* gate = nullptr;

void wait_at_gate() { gate->wait(); }

// Holds every worker after its commit, until the gate opens.
struct HoldWorkersAfterCommit {
  process_support::SharedGate shared_gate;
  HoldWorkersAfterCommit() {
    gate = &shared_gate;
    detail::set_child_exit_hook(wait_at_gate);
  }
  ~HoldWorkersAfterCommit() {
    detail::set_child_exit_hook(nullptr);
    shared_gate.open();
  }
};

template <class R, class F>
Isolate<R> spawn_delivering_at_commit(F fn, const CancellationToken& token = CancellationToken::none(),
                                      IsolateOptions options = {}) {
  return detail::spawn_isolate<R>(std::move(fn), token, std::move(options), nullptr, true);
}

using test_support::spin_for;

}  // namespace

TEST_CASE("an outcome delivered at commit arrives while the worker has not exited", "[isolate][commit]") {
  HoldWorkersAfterCommit hold;
  SECTION("a value") {
    auto isolate = spawn_delivering_at_commit<int>([] { return 42; });
    REQUIRE(isolate.future().wait_for(test_support::kDeadline) == std::future_status::ready);
    CHECK_FALSE(hold.shared_gate.opened_by_watchdog());
    CHECK(isolate.future().get() == 42);
    CHECK_FALSE(isolate.exited().is_ready());  // held at the gate
    hold.shared_gate.open();
    REQUIRE(isolate.exited().wait_for(test_support::kDeadline) == std::future_status::ready);
    CHECK(isolate.exited().get().kind == ProcessExit::Kind::exited);
    CHECK(isolate.exited().get().code == 0);
  }
  SECTION("an exception, with its type") {
    auto isolate = spawn_delivering_at_commit<int>([]() -> int { throw std::out_of_range("index 7"); });
    REQUIRE(isolate.future().wait_for(test_support::kDeadline) == std::future_status::ready);
    CHECK_FALSE(hold.shared_gate.opened_by_watchdog());
    CHECK_THROWS_MATCHES(isolate.future().get(), std::out_of_range, Catch::Message("index 7"));
    CHECK_FALSE(isolate.exited().is_ready());
    hold.shared_gate.open();
    REQUIRE(isolate.exited().wait_for(test_support::kDeadline) == std::future_status::ready);
  }
  SECTION("a result in a shared memory object, which is removed") {
    const std::string big(1'000'000, 'b');
    auto isolate = spawn_delivering_at_commit<std::string>([big] { return big; });
    REQUIRE(isolate.future().wait_for(test_support::kDeadline) == std::future_status::ready);
    CHECK_FALSE(hold.shared_gate.opened_by_watchdog());
    CHECK(isolate.future().get() == big);
    CHECK(process_support::count_result_shm() == 0);
    hold.shared_gate.open();
    REQUIRE(isolate.exited().wait_for(test_support::kDeadline) == std::future_status::ready);
  }
  SECTION("to a thread blocked in get()") {
    // get() starts waiting while the work still runs (most likely: the work
    // takes 20 ms), taking the reap over; it must see the commit itself (or
    // be woken by the reaper's delivery), not wait for the exit.
    auto isolate = spawn_delivering_at_commit<int>([] {
      spin_for(20ms);
      return 7;
    });
    const int value = isolate.future().get();
    CHECK(value == 7);
    CHECK_FALSE(hold.shared_gate.opened_by_watchdog());
    hold.shared_gate.open();
    REQUIRE(isolate.exited().wait_for(test_support::kDeadline) == std::future_status::ready);
  }
  CHECK(process_support::count_children() == 0);
}

TEST_CASE("a worker that dies after committing its outcome still delivers it", "[isolate][commit]") {
  detail::set_child_exit_hook([] { ::raise(SIGKILL); });
  auto isolate = spawn_delivering_at_commit<int>([] { return 5; });
  const auto error = test_support::failure_of(isolate.future());
  detail::set_child_exit_hook(nullptr);
  CHECK_FALSE(error);
  CHECK(isolate.future().get() == 5);
  REQUIRE(isolate.exited().wait_for(test_support::kDeadline) == std::future_status::ready);
  CHECK(isolate.exited().get().signal == SIGKILL);
}

TEST_CASE("a worker that dies before committing fails with WorkerCrashed, as without early delivery",
          "[isolate][commit]") {
  auto isolate = spawn_delivering_at_commit<int>([]() -> int { ::_exit(3); });
  const auto error = test_support::failure_of(isolate.future());
  REQUIRE(error);
  CHECK_THROWS_AS(std::rethrow_exception(error), WorkerCrashed);
}

TEST_CASE("cancel racing an outcome delivered at commit yields exactly one outcome and leaves nothing",
          "[isolate][commit][cancel][leaks]") {
  auto batch = [](int runs, std::mt19937& random) {
    std::vector<Future<ProcessExit>> exits;
    bool one_outcome = true;
    for (int i = 0; i < runs; ++i) {
      CancellationToken token;
      const int work_us = static_cast<int>(random() % 300);
      IsolateOptions options;
#if defined(__SANITIZE_ADDRESS__)
      options.timeout = 10s;  // see the ten-thousand-run test in isolate_cancel_test.cpp
#endif
      auto isolate = spawn_delivering_at_commit<std::string>(
          [work_us] {
            spin_for(std::chrono::microseconds(work_us));
            return std::string(static_cast<std::size_t>(work_us) * 100, 'r');  // some outgrow the inline area
          },
          token, options);
      bool cancelled = false;
      if (random() % 2) {
        spin_for(std::chrono::microseconds(random() % 300));
        cancelled = token.cancel();
      }
      const auto& future = isolate.future();
      if (future.wait_for(test_support::kDeadline) != std::future_status::ready) return false;
      if (const auto error = future.state()->error()) {
        one_outcome = one_outcome && cancelled && error == token.exception();
      } else {
        one_outcome = one_outcome && future.get().size() == static_cast<std::size_t>(work_us) * 100;
      }
      exits.push_back(isolate.exited());
    }
    return process_support::wait_all(exits) && one_outcome;
  };
  std::mt19937 random(77);
  REQUIRE(batch(50, random));  // warm up
  const int fds = process_support::count_fds();
  const int mappings = process_support::count_mappings();
  REQUIRE(batch(500, random));
  CHECK(process_support::count_children() == 0);
  CHECK(process_support::count_fds() == fds);
  CHECK(process_support::count_mappings() <= mappings + 16);
  CHECK(process_support::count_result_shm() == 0);
}

TEST_CASE("with the thread backend, early delivery changes nothing", "[isolate][commit]") {
  IsolateOptions options;
  options.backend = Backend::thread;
  auto isolate = spawn_delivering_at_commit<int>([] { return 9; }, CancellationToken::none(), options);
  CHECK(isolate.future().get() == 9);
  CHECK(isolate.backend() == Backend::thread);
}
