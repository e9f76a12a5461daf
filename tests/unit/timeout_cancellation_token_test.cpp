#include "cancellable/timeout_cancellation_token.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <functional>
#include <stdexcept>
#include <thread>

#include "cancellable/cancellable_completer.hpp"
#include "cancellable/detail/library_thread.hpp"
#include "cancellable/exceptions.hpp"
#include "support/test_support.hpp"

using namespace cancellable;
using namespace std::chrono_literals;
using test_support::RecordingCancellable;

namespace {

// Waits, without sleeping, until every timer due before `after` from now has
// fired: the timer service fires in deadline order on one thread, so a later
// timer firing proves the earlier ones have.
void wait_for_timers_due_within(std::chrono::nanoseconds after) {
  TimeoutCancellationToken clock(after);
  CancellableCompleter<void> completer(clock);
  REQUIRE(completer.future().wait_for(test_support::kDeadline) == std::future_status::ready);
}

}  // namespace

TEST_CASE("an eager timeout token cancels itself with a TimeoutException after its duration",
          "[timeout]") {
  const auto start = std::chrono::steady_clock::now();
  TimeoutCancellationToken token(20ms);
  CancellableCompleter<int> completer(token);
  auto future = completer.future();
  REQUIRE(future.wait_for(test_support::kDeadline) == std::future_status::ready);
  CHECK(std::chrono::steady_clock::now() - start >= 20ms);
  CHECK(token.is_cancelled());
  CHECK(token.timeout() == 20ms);
  try {
    future.get();
    FAIL("the future should have failed");
  } catch (const TimeoutException& e) {
    CHECK(e.timeout() == 20ms);
  }
  CHECK(future.state()->error() == token.exception());
  CHECK_FALSE(token.has_cancellables());
}

TEST_CASE("an eager timeout token counts down even with nothing attached", "[timeout]") {
  TimeoutCancellationToken token(5ms);
  wait_for_timers_due_within(30ms);
  CHECK(token.is_cancelled());
}

TEST_CASE("a lazy timeout token starts counting when the first cancellable attaches",
          "[timeout]") {
  TimeoutCancellationToken token(5ms, {.lazy_start = true});
  wait_for_timers_due_within(30ms);
  CHECK_FALSE(token.is_cancelled());

  const auto attached_at = std::chrono::steady_clock::now();
  CancellableCompleter<void> completer(token);
  REQUIRE(completer.future().wait_for(test_support::kDeadline) == std::future_status::ready);
  CHECK(std::chrono::steady_clock::now() - attached_at >= 5ms);
  CHECK_THROWS_AS(completer.future().get(), TimeoutException);
}

TEST_CASE("a timeout token cancels with the custom exception it was given, the same object",
          "[timeout]") {
  struct Deadline : std::runtime_error {
    Deadline() : std::runtime_error("deadline") {}
  };
  auto custom = std::make_exception_ptr(Deadline());
  TimeoutCancellationToken token(1ms, {.exception = custom});
  CancellableCompleter<void> completer(token);
  REQUIRE(completer.future().wait_for(test_support::kDeadline) == std::future_status::ready);
  CHECK(token.exception() == custom);
  CHECK(completer.future().state()->error() == custom);
}

TEST_CASE("a manual cancel stops the countdown and cancels with a CancelledException, once",
          "[timeout]") {
  // Lazy: the countdown starts with the attach, so the attach cannot come
  // too late however slow the machine is.
  TimeoutCancellationToken token(10ms, {.lazy_start = true});
  RecordingCancellable c;
  REQUIRE(c.maybe_attach(token));
  CHECK(token.cancel());
  wait_for_timers_due_within(40ms);
  CHECK(c.calls() == 1);
  CHECK_THROWS_AS(std::rethrow_exception(token.exception()), CancelledException);
}

TEST_CASE("a timeout followed by a manual cancel notifies once", "[timeout]") {
  TimeoutCancellationToken token(1ms, {.lazy_start = true});
  RecordingCancellable c;
  REQUIRE(c.maybe_attach(token));
  wait_for_timers_due_within(20ms);
  REQUIRE(token.is_cancelled());
  CHECK_FALSE(token.cancel());
  CHECK(c.calls() == 1);
  CHECK_THROWS_AS(std::rethrow_exception(token.exception()), TimeoutException);
}

TEST_CASE("on_cancel of a timed-out token runs on the timer thread, continuations elsewhere",
          "[timeout]") {
  // Lazy: the countdown starts when c attaches, and the timer may fire
  // before the continuation below is in place on a slow machine; such a
  // round proves nothing and is tried again. c is notified before the
  // completer (attach order), so once the continuation runs, c has been.
  for (int round = 0; round < 1000; ++round) {
    TimeoutCancellationToken token(1ms, {.lazy_start = true});
    RecordingCancellable c;
    REQUIRE(c.maybe_attach(token));  // lazy: not started before this attach
    CancellableCompleter<int> completer(token);
    struct Seen {
      std::thread::id thread;
      bool on_library_thread = true;
      test_support::Event done;
    };
    auto seen = std::make_shared<Seen>();
    std::function<void()> continuation = [seen] {
      seen->thread = std::this_thread::get_id();
      seen->on_library_thread = detail::on_library_thread();
      seen->done.set();
    };
    if (!completer.future().state()->subscribe_if_pending(continuation)) continue;
    REQUIRE(seen->done.wait());
    CHECK(completer.future().state()->error() == token.exception());
    REQUIRE(c.calls() == 1);
    CHECK(c.thread() != std::this_thread::get_id());
    CHECK(seen->thread != c.thread());
    CHECK(seen->thread != std::this_thread::get_id());
    CHECK_FALSE(seen->on_library_thread);
    return;
  }
  FAIL("the timer fired before the continuation was in place in every round");
}

TEST_CASE("a negative timeout is rejected with std::invalid_argument", "[timeout]") {
  CHECK_THROWS_AS(TimeoutCancellationToken(-1ms), std::invalid_argument);
}

TEST_CASE("a zero timeout cancels at once", "[timeout]") {
  TimeoutCancellationToken token(0ms);
  CancellableCompleter<void> completer(token);
  REQUIRE(completer.future().wait_for(test_support::kDeadline) == std::future_status::ready);
  CHECK(token.is_cancelled());
}

TEST_CASE("a timeout token dropped before its deadline leaves nothing behind", "[timeout]") {
  std::weak_ptr<int> witness;
  {
    TimeoutCancellationToken token(1h);
    auto payload = std::make_shared<int>(1);
    witness = payload;
    CancellableCompleter<void> completer(token, [payload] {});
  }
  // The completer is gone and the countdown holds no reference to the token.
  CHECK(witness.expired());
}
