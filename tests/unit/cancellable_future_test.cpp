#include "cancellable/cancellable_future.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <memory>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>

#include "cancellable/cancellable_completer.hpp"
#include "cancellable/exceptions.hpp"
#include "cancellable/timeout_cancellation_token.hpp"
#include "support/test_support.hpp"
#include "worker/test_seams.hpp"

using namespace cancellable;
using namespace std::chrono_literals;
using test_support::Event;
using test_support::ExecutorBlocker;

namespace {

using test_support::failure_of;

// A computation that waits until released, so that tests control when it ends.
struct Gate {
  Event started;
  Event release;
  std::atomic<bool> finished{false};
};

// Waits, without sleeping, until the timer service has passed `after`.
void wait_for_timers_due_within(std::chrono::nanoseconds after) {
  auto f = CancellableFuture::delayed(after);
  REQUIRE(f.wait_for(test_support::kDeadline) == std::future_status::ready);
}

}  // namespace

// --- from / microtask -------------------------------------------------------

TEST_CASE("from runs the computation on the default executor", "[factories][from]") {
  auto f = CancellableFuture::from([] { return std::this_thread::get_id(); });
  CHECK(f.get() != std::this_thread::get_id());
}

TEST_CASE("from and microtask on a cancelled token fail at once and never invoke the computation",
          "[factories][from]") {
  CancellationToken token;
  token.cancel();
  bool invoked = false;
  bool on_cancel_called = false;
  auto computation = [&] {
    invoked = true;
    return 1;
  };
  auto f = GENERATE(0, 1) == 0
               ? CancellableFuture::from(computation, token, [&] { on_cancel_called = true; })
               : CancellableFuture::microtask(computation, token, [&] { on_cancel_called = true; });
  REQUIRE(f.is_ready());
  CHECK(f.state()->error() == token.exception());
  wait_for_timers_due_within(1ms);
  CHECK_FALSE(invoked);
  CHECK_FALSE(on_cancel_called);
  CHECK_FALSE(token.has_cancellables());
}

TEST_CASE("a computation cancelled while queued never starts", "[factories][from]") {
  ExecutorBlocker blocker(detail::default_executor_thread_count());
  REQUIRE(blocker.wait_until_holding());
  CancellationToken token;
  std::atomic<bool> started{false};
  bool on_cancel_called = false;
  auto f = CancellableFuture::from([&] { started = true; return 1; }, token,
                                   [&] { on_cancel_called = true; });
  token.cancel();
  CHECK(f.is_ready());
  CHECK(on_cancel_called);
  CHECK_FALSE(token.has_cancellables());
  // One free thread drains the queue in order: the cancelled job, then the marker.
  Event marker;
  default_executor().post([&] { marker.set(); });
  blocker.release_one(0);
  REQUIRE(marker.wait());
  blocker.release_all();
  CHECK_FALSE(started.load());
}

TEST_CASE("a computation cancelled while running fails at once and its result is discarded",
          "[factories][from]") {
  CancellationToken token;
  auto gate = std::make_shared<Gate>();
  bool on_cancel_called = false;
  auto f = CancellableFuture::from(
      [gate] {
        gate->started.set();
        gate->release.wait();
        gate->finished = true;
        return 99;
      },
      token, [&] { on_cancel_called = true; });
  REQUIRE(gate->started.wait());
  token.cancel();
  CHECK(f.is_ready());  // before the computation has finished
  CHECK_FALSE(gate->finished.load());
  CHECK(f.state()->error() == token.exception());
  CHECK(on_cancel_called);
  gate->release.set();
  CHECK_THROWS_AS(f.get(), CancelledException);
  CHECK_FALSE(token.has_cancellables());
}

TEST_CASE("a computation that takes a std::stop_token sees the cancellation", "[factories][from]") {
  CancellationToken token;
  auto gate = std::make_shared<Gate>();
  auto stopped = std::make_shared<std::atomic<bool>>(false);
  auto f = CancellableFuture::from(
      [gate, stopped](std::stop_token stop) {
        gate->started.set();
        Event woke;
        std::stop_callback on_stop(stop, [&] { woke.set(); });
        stopped->store(woke.wait());
        gate->finished = true;
        gate->release.set();
        return 0;
      },
      token);
  REQUIRE(gate->started.wait());
  token.cancel();
  REQUIRE(gate->release.wait());
  CHECK(stopped->load());
  CHECK_THROWS_AS(f.get(), CancelledException);
}

TEST_CASE("a computation that takes a CancellationToken receives the factory's token",
          "[factories][from]") {
  CancellationToken token;
  auto f = CancellableFuture::from([](CancellationToken t) { return t; }, token);
  CHECK(f.get() == token);
}

TEST_CASE("every factory leaves nothing attached after success, error and cancellation",
          "[factories]") {
  CancellationToken token;
  const int which = GENERATE(range(0, 5));
  const int outcome = GENERATE(0, 1, 2);  // success, error, cancellation
  CAPTURE(which, outcome);
  auto gate = std::make_shared<Gate>();
  auto computation = [gate, outcome]() -> int {
    gate->started.set();
    gate->release.wait();
    if (outcome == 1) throw std::runtime_error("failed");
    return 5;
  };
  CancellableCompleter<int> source;
  Future<int> f;
  switch (which) {
    case 0: f = CancellableFuture::from(computation, token); break;
    case 1: f = CancellableFuture::microtask(computation, token); break;
    case 2: f = CancellableFuture::sync([&] { return source.future(); }, token); break;
    case 3: f = CancellableFuture::value(source.future(), token); break;
    case 4: f = CancellableFuture::delayed(1ms, computation, token); break;
  }
  const bool source_based = which == 2 || which == 3;
  if (!source_based) REQUIRE(gate->started.wait());
  CHECK(token.has_cancellables());
  if (outcome == 2) {
    token.cancel();
  } else if (source_based) {
    outcome == 0 ? source.complete(5)
                 : source.complete_error(std::make_exception_ptr(std::runtime_error("failed")));
  }
  gate->release.set();
  REQUIRE(f.wait_for(test_support::kDeadline) == std::future_status::ready);
  if (outcome == 0) CHECK(f.get() == 5);
  if (outcome == 1) CHECK_THROWS_AS(f.get(), std::runtime_error);
  if (outcome == 2) CHECK_THROWS_AS(f.get(), CancelledException);
  CHECK_FALSE(token.has_cancellables());
}

TEST_CASE("a computation that throws fails the future with that exception", "[factories][from]") {
  auto f = CancellableFuture::from([]() -> int { throw std::out_of_range("oops"); });
  CHECK_THROWS_AS(f.get(), std::out_of_range);
}

TEST_CASE("a future returned by the computation is adopted", "[factories][from]") {
  CancellableCompleter<std::string> inner;
  auto inner_future = inner.future();
  auto f = CancellableFuture::from([inner_future] { return inner_future; });
  static_assert(std::is_same_v<decltype(f), Future<std::string>>);
  inner.complete("adopted");
  CHECK(f.get() == "adopted");
}

TEST_CASE("from works for computations that return nothing", "[factories][from]") {
  std::atomic<bool> ran{false};
  auto f = CancellableFuture::from([&] { ran = true; });
  static_assert(std::is_same_v<decltype(f), Future<void>>);
  f.get();
  CHECK(ran.load());
}

// --- sync ------------------------------------------------------------------

TEST_CASE("sync runs the computation inline, now", "[factories][sync]") {
  auto f = CancellableFuture::sync([] { return std::this_thread::get_id(); });
  REQUIRE(f.is_ready());
  CHECK(f.get() == std::this_thread::get_id());
}

TEST_CASE("sync on a cancelled token never invokes the computation", "[factories][sync]") {
  CancellationToken token;
  token.cancel();
  bool invoked = false;
  bool on_cancel_called = false;
  auto f = CancellableFuture::sync([&] { invoked = true; return 1; }, token,
                                   [&] { on_cancel_called = true; });
  CHECK(failure_of(f) == token.exception());
  CHECK_FALSE(invoked);
  CHECK_FALSE(on_cancel_called);
}

TEST_CASE("sync turns a throw into a failed future", "[factories][sync]") {
  auto f = CancellableFuture::sync([]() -> int { throw std::invalid_argument("bad"); });
  REQUIRE(f.is_ready());
  CHECK_THROWS_AS(f.get(), std::invalid_argument);
}

TEST_CASE("sync adopts a returned future, which the token can still cancel", "[factories][sync]") {
  CancellationToken token;
  CancellableCompleter<int> inner;
  bool on_cancel_called = false;
  auto f = CancellableFuture::sync([&] { return inner.future(); }, token,
                                   [&] { on_cancel_called = true; });
  CHECK_FALSE(f.is_ready());
  token.cancel();
  CHECK(failure_of(f) == token.exception());
  CHECK(on_cancel_called);
  inner.complete(1);  // ignored
  CHECK_THROWS_AS(f.get(), CancelledException);
}

// --- value -----------------------------------------------------------------

TEST_CASE("value wraps a plain value", "[factories][value]") {
  auto f = CancellableFuture::value(std::string("v"));
  CHECK(f.get() == "v");
}

TEST_CASE("value on a cancelled token fails, runs on_cancel and ignores the source",
          "[factories][value]") {
  CancellationToken token;
  token.cancel();
  bool on_cancel_called = false;
  SECTION("a plain value") {
    auto f = CancellableFuture::value(1, token, [&] { on_cancel_called = true; });
    CHECK(failure_of(f) == token.exception());
  }
  SECTION("a failed future") {
    auto source = make_failed_future<int>(std::make_exception_ptr(std::runtime_error("ignored")));
    auto f = CancellableFuture::value(source, token, [&] { on_cancel_called = true; });
    CHECK(failure_of(f) == token.exception());
  }
  CHECK(on_cancel_called);
  CHECK_FALSE(token.has_cancellables());
}

TEST_CASE("value adopts a future and fails at once when cancelled while pending",
          "[factories][value]") {
  CancellationToken token;
  CancellableCompleter<int> source;
  auto f = CancellableFuture::value(source.future(), token);
  CHECK_FALSE(f.is_ready());
  auto e = std::make_exception_ptr(std::runtime_error("stop"));
  token.cancel(e);
  CHECK(failure_of(f) == e);
  source.complete(3);
  CHECK(failure_of(f) == e);
}

TEST_CASE("as_cancellable is value with a token", "[factories][value]") {
  CancellationToken token;
  CancellableCompleter<int> source;
  auto f = as_cancellable(source.future(), token);
  source.complete(8);
  CHECK(f.get() == 8);
  CHECK_FALSE(token.has_cancellables());
}

// --- delayed -----------------------------------------------------------------

TEST_CASE("delayed runs the computation after the delay", "[factories][delayed]") {
  const auto start = std::chrono::steady_clock::now();
  auto f = CancellableFuture::delayed(10ms, [] { return std::this_thread::get_id(); });
  const auto ran_on = f.get();
  CHECK(std::chrono::steady_clock::now() - start >= 10ms);
  CHECK(ran_on != std::this_thread::get_id());
}

TEST_CASE("delayed without a computation completes with no value after the delay",
          "[factories][delayed]") {
  const auto start = std::chrono::steady_clock::now();
  auto f = CancellableFuture::delayed(5ms);
  static_assert(std::is_same_v<decltype(f), Future<void>>);
  f.get();
  CHECK(std::chrono::steady_clock::now() - start >= 5ms);
}

TEST_CASE("delayed without a computation can be cancelled during the delay",
          "[factories][delayed]") {
  CancellationToken token;
  bool on_cancel_called = false;
  auto f = CancellableFuture::delayed(1h, token, [&] { on_cancel_called = true; });
  token.cancel();
  REQUIRE(f.is_ready());
  CHECK_THROWS_AS(f.get(), CancelledException);
  CHECK(on_cancel_called);
  CHECK_FALSE(token.has_cancellables());
}

TEST_CASE("delayed on a cancelled token starts no timer, never runs, and runs on_cancel",
          "[factories][delayed]") {
  CancellationToken token;
  token.cancel();
  std::atomic<bool> ran{false};
  bool on_cancel_called = false;
  auto f = CancellableFuture::delayed(1ms, [&] { ran = true; return 1; }, token,
                                      [&] { on_cancel_called = true; });
  CHECK(failure_of(f) == token.exception());
  CHECK(on_cancel_called);
  wait_for_timers_due_within(20ms);
  CHECK_FALSE(ran.load());
}

TEST_CASE("delayed cancelled during the delay never runs", "[factories][delayed]") {
  CancellationToken token;
  auto ran = std::make_shared<std::atomic<bool>>(false);
  // A delay no machine can outlast: the cancel lands inside it.
  auto f = CancellableFuture::delayed(1h, [ran] { ran->store(true); return 1; }, token);
  token.cancel();
  CHECK(failure_of(f) == token.exception());
  // Anything the timer handed to the executor has run by now too.
  CancellableFuture::from([] {}).get();
  CHECK_FALSE(ran->load());
  CHECK_FALSE(token.has_cancellables());
}

TEST_CASE("delayed cancelled while running discards the result", "[factories][delayed]") {
  CancellationToken token;
  auto gate = std::make_shared<Gate>();
  auto f = CancellableFuture::delayed(1ms, [gate] {
    gate->started.set();
    gate->release.wait();
    return 1;
  }, token);
  REQUIRE(gate->started.wait());
  token.cancel();
  CHECK(failure_of(f) == token.exception());
  gate->release.set();
}

TEST_CASE("a timeout token stops a delayed computation", "[factories][delayed]") {
  TimeoutCancellationToken token(1ms);
  auto f = CancellableFuture::delayed(1h, [] { return 1; }, token);
  CHECK_THROWS_AS(f.get(), TimeoutException);
}
