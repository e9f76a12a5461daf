#include "cancellable/cancellable_base.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <memory>
#include <stdexcept>
#include <thread>

#include "cancellable/exceptions.hpp"
#include "support/test_support.hpp"

using namespace cancellable;
using namespace std::chrono_literals;
using test_support::Event;
using test_support::RecordingCancellable;

TEST_CASE("maybe_attach on a cancelled token calls on_cancel before returning and returns false",
          "[cancellable]") {
  CancellationToken token;
  token.cancel_with_reason("already");
  RecordingCancellable c;
  CHECK_FALSE(c.maybe_attach(token));
  CHECK(c.calls() == 1);
  CHECK(c.last_exception() == token.exception());
  CHECK(c.is_cancelled());
  CHECK_FALSE(token.has_cancellables());
}

TEST_CASE("maybe_attach on a live token attaches and returns true", "[cancellable]") {
  CancellationToken token;
  RecordingCancellable c;
  CHECK(c.maybe_attach(token));
  CHECK(token.has_cancellables());
  CHECK(c.cancellation_token() == token);
  CHECK_FALSE(c.is_cancelled());
  CHECK(c.calls() == 0);
  token.cancel();
  CHECK(c.calls() == 1);
  CHECK(c.is_cancelled());
}

TEST_CASE("maybe_attach to a second token while attached throws std::logic_error",
          "[cancellable]") {
  CancellationToken a;
  CancellationToken b;
  RecordingCancellable c;
  REQUIRE(c.maybe_attach(a));
  CHECK(c.maybe_attach(a));  // same token: fine
  CHECK_THROWS_AS(c.maybe_attach(b), std::logic_error);
  CHECK(c.cancellation_token() == a);
}

TEST_CASE("is_cancelled is true before the cancellable's own turn to be notified",
          "[cancellable]") {
  CancellationToken token;
  RecordingCancellable first(1);
  RecordingCancellable second(2);
  bool second_saw_cancelled = false;
  int second_calls_then = -1;
  first.during_cancel = [&](std::exception_ptr) {
    second_saw_cancelled = second.is_cancelled();
    second_calls_then = second.calls();
  };
  REQUIRE(first.maybe_attach(token));
  REQUIRE(second.maybe_attach(token));
  token.cancel();
  CHECK(second_saw_cancelled);
  CHECK(second_calls_then == 0);
}

TEST_CASE("after detach returns on_cancel is never called", "[cancellable]") {
  CancellationToken token;
  RecordingCancellable c;
  REQUIRE(c.maybe_attach(token));
  c.detach();
  CHECK_FALSE(token.has_cancellables());
  token.cancel();
  CHECK(c.calls() == 0);
}

TEST_CASE("destroying a cancellable detaches it", "[cancellable]") {
  CancellationToken token;
  {
    RecordingCancellable c;
    REQUIRE(c.maybe_attach(token));
    CHECK(token.has_cancellables());
  }
  CHECK_FALSE(token.has_cancellables());
  token.cancel();  // would touch a destroyed object if it were still attached
}

TEST_CASE("detach waits for an on_cancel running on another thread", "[cancellable][concurrency]") {
  CancellationToken token;
  RecordingCancellable c;
  Event entered;
  Event release;
  std::atomic<bool> on_cancel_finished{false};
  c.during_cancel = [&](std::exception_ptr) {
    entered.set();
    release.wait();
    on_cancel_finished.store(true);
  };
  REQUIRE(c.maybe_attach(token));
  std::thread canceller([&] { token.cancel(); });
  REQUIRE(entered.wait());

  Event detach_returned;
  std::atomic<bool> finished_when_detach_returned{false};
  std::thread detacher([&] {
    c.detach();
    finished_when_detach_returned.store(on_cancel_finished.load());
    detach_returned.set();
  });
  // A detach that does not wait returns while on_cancel is still blocked.
  CHECK_FALSE(detach_returned.wait(50ms));
  release.set();
  REQUIRE(detach_returned.wait());
  detacher.join();
  canceller.join();
  CHECK(finished_when_detach_returned.load());
  CHECK(c.calls() == 1);
}

TEST_CASE("detach from inside on_cancel does not wait for itself", "[cancellable]") {
  CancellationToken token;
  RecordingCancellable c;
  c.during_cancel = [&](std::exception_ptr) { c.detach(); };
  REQUIRE(c.maybe_attach(token));
  token.cancel();  // would deadlock if detach waited for the running on_cancel
  CHECK(c.calls() == 1);
}

TEST_CASE("a cancellable may be attached again after its token was cancelled", "[cancellable]") {
  CancellationToken first;
  CancellationToken second;
  RecordingCancellable c;
  REQUIRE(c.maybe_attach(first));
  first.cancel();
  CHECK(c.maybe_attach(second));
  second.cancel();
  CHECK(c.calls() == 2);
  CHECK(c.last_exception() == second.exception());
}

TEST_CASE("attaching through the token leaves the cancellable as maybe_attach does",
          "[cancellable]") {
  CancellationToken token;
  SECTION("it knows its token, and detach() removes it") {
    RecordingCancellable c;
    REQUIRE(token.attach_cancellable(c));
    CHECK(c.cancellation_token() == token);
    c.detach();
    CHECK_FALSE(token.has_cancellables());
    token.cancel();
    CHECK(c.calls() == 0);
  }
  SECTION("its destructor removes it, so a later cancel calls nothing freed") {
    {
      RecordingCancellable c;
      REQUIRE(token.attach_cancellable(c));
    }
    CHECK_FALSE(token.has_cancellables());
    CHECK(token.cancel());
  }
  SECTION("is_cancelled() is true once it was notified") {
    RecordingCancellable c;
    REQUIRE(token.attach_cancellable(c));
    token.cancel();
    CHECK(c.calls() == 1);
    CHECK(c.is_cancelled());
  }
  SECTION("attaching it to a second token throws std::logic_error") {
    RecordingCancellable c;
    CancellationToken other;
    REQUIRE(token.attach_cancellable(c));
    CHECK(token.attach_cancellable(c));
    CHECK_THROWS_AS(other.attach_cancellable(c), std::logic_error);
    CHECK_THROWS_AS(c.maybe_attach(other), std::logic_error);
  }
  SECTION("on a cancelled token it neither attaches nor notifies, but knows the token") {
    token.cancel();
    RecordingCancellable c;
    CHECK_FALSE(token.attach_cancellable(c));
    CHECK(c.calls() == 0);
    CHECK(c.cancellation_token() == token);
    CHECK(c.is_cancelled());
  }
}
