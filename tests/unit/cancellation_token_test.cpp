#include "cancellable/cancellation_token.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <memory>
#include <stdexcept>
#include <stop_token>
#include <thread>
#include <vector>

#include "cancellable/exceptions.hpp"
#include "cancellable/merged_cancellation_token.hpp"
#include "support/test_support.hpp"

using namespace cancellable;
using test_support::RecordingCancellable;

namespace {
struct MyError : std::runtime_error {
  MyError() : std::runtime_error("my error") {}
};
}  // namespace

TEST_CASE("a new token is not cancelled and has no exception", "[token]") {
  CancellationToken token;
  CHECK_FALSE(token.is_cancelled());
  CHECK(token.exception() == nullptr);
  CHECK_FALSE(token.has_cancellables());
}

TEST_CASE("cancel without an exception cancels with a CancelledException", "[token]") {
  CancellationToken token;
  CHECK(token.cancel());
  CHECK(token.is_cancelled());
  CHECK_THROWS_AS(std::rethrow_exception(token.exception()), CancelledException);
}

TEST_CASE("the first cancel wins and later cancels change nothing", "[token]") {
  CancellationToken token;
  auto first = std::make_exception_ptr(MyError());
  auto second = std::make_exception_ptr(CancelledException("later"));
  CHECK(token.cancel(first));
  CHECK_FALSE(token.cancel(second));
  CHECK_FALSE(token.cancel());
  CHECK_FALSE(token.cancel_with_reason("even later"));
  CHECK(token.exception() == first);
}

TEST_CASE("exception() returns the same exception_ptr on every read", "[token]") {
  CancellationToken token;
  token.cancel();
  auto a = token.exception();
  auto b = token.exception();
  CHECK(a == b);
  CHECK(test_support::object_of(a) == test_support::object_of(b));
}

TEST_CASE("cancel_with_reason cancels with a CancelledException carrying the reason", "[token]") {
  CancellationToken token;
  token.cancel_with_reason("shutdown");
  try {
    std::rethrow_exception(token.exception());
  } catch (const CancelledException& e) {
    CHECK(e.reason() == std::optional<std::string>("shutdown"));
  }
}

TEST_CASE("copies of a token are the same token", "[token]") {
  CancellationToken token;
  CancellationToken copy = token;
  CHECK(copy == token);
  CHECK_FALSE(CancellationToken() == token);
  copy.cancel();
  CHECK(token.is_cancelled());
  CHECK(token.exception() == copy.exception());
}

TEST_CASE("attached cancellables are notified in attach order with the token's exception",
          "[token]") {
  CancellationToken token;
  auto mutex = std::make_shared<std::mutex>();
  RecordingCancellable::Log log;
  std::vector<std::unique_ptr<RecordingCancellable>> cancellables;
  for (int i = 0; i < 5; ++i) {
    cancellables.push_back(std::make_unique<RecordingCancellable>(i, mutex, &log));
    REQUIRE(token.attach_cancellable(*cancellables.back()));
  }
  auto error = std::make_exception_ptr(MyError());
  token.cancel(error);
  CHECK(log == std::vector<int>{0, 1, 2, 3, 4});
  for (auto& c : cancellables) {
    CHECK(c->calls() == 1);
    CHECK(c->last_exception() == error);
  }
  CHECK_FALSE(token.has_cancellables());
}

TEST_CASE("the exception is stored before anyone is notified", "[token]") {
  CancellationToken token;
  RecordingCancellable c;
  bool cancelled_inside = false;
  std::exception_ptr seen;
  c.during_cancel = [&](std::exception_ptr) {
    cancelled_inside = token.is_cancelled();
    seen = token.exception();
  };
  REQUIRE(c.maybe_attach(token));
  auto error = std::make_exception_ptr(MyError());
  token.cancel(error);
  CHECK(cancelled_inside);
  CHECK(seen == error);
}

TEST_CASE("cancellables are notified on the thread that cancels", "[token]") {
  CancellationToken token;
  RecordingCancellable c;
  REQUIRE(c.maybe_attach(token));
  std::thread::id canceller;
  std::thread t([&] {
    canceller = std::this_thread::get_id();
    token.cancel();
  });
  t.join();
  CHECK(c.thread() == canceller);
}

TEST_CASE("attaching to a cancelled token does not attach and returns false", "[token]") {
  CancellationToken token;
  token.cancel();
  RecordingCancellable c;
  CHECK_FALSE(token.attach_cancellable(c));
  CHECK_FALSE(token.has_cancellables());
  CHECK(c.calls() == 0);
}

TEST_CASE("attaching the same cancellable twice attaches it once", "[token]") {
  CancellationToken token;
  RecordingCancellable c;
  CHECK(token.attach_cancellable(c));
  CHECK(token.attach_cancellable(c));
  token.detach_cancellable(c);
  CHECK_FALSE(token.has_cancellables());
  CHECK(token.attach_cancellable(c));
  CHECK(token.attach_cancellable(c));
  token.cancel();
  CHECK(c.calls() == 1);
}

TEST_CASE("a cancellable attached to one token cannot be attached to another", "[token]") {
  CancellationToken a;
  CancellationToken b;
  RecordingCancellable c;
  REQUIRE(a.attach_cancellable(c));
  CHECK_THROWS_AS(b.attach_cancellable(c), std::logic_error);
  CHECK_FALSE(b.has_cancellables());
  a.detach_cancellable(c);
  CHECK(b.attach_cancellable(c));
}

TEST_CASE("a detached cancellable is not notified", "[token]") {
  CancellationToken token;
  RecordingCancellable kept(1);
  RecordingCancellable removed(2);
  REQUIRE(token.attach_cancellable(kept));
  REQUIRE(token.attach_cancellable(removed));
  token.detach_cancellable(removed);
  CHECK(token.has_cancellables());
  token.cancel();
  CHECK(kept.calls() == 1);
  CHECK(removed.calls() == 0);
}

TEST_CASE("detaching inside on_cancel: itself is a no-op, one not yet notified is never called",
          "[token]") {
  CancellationToken token;
  RecordingCancellable first(1);
  RecordingCancellable second(2);
  RecordingCancellable third(3);
  first.during_cancel = [&](std::exception_ptr) {
    token.detach_cancellable(first);   // being notified: nothing to do
    token.detach_cancellable(second);  // not notified yet: removed, as detach promises
  };
  REQUIRE(token.attach_cancellable(first));
  REQUIRE(token.attach_cancellable(second));
  REQUIRE(token.attach_cancellable(third));
  token.cancel();
  CHECK(first.calls() == 1);
  CHECK(second.calls() == 0);
  CHECK(third.calls() == 1);
  CHECK_FALSE(token.has_cancellables());
}

TEST_CASE("on_cancel runs with no internal lock held", "[token]") {
  CancellationToken token;
  RecordingCancellable c;
  RecordingCancellable late;
  bool attach_result = true;
  bool has_cancellables = true;
  c.during_cancel = [&](std::exception_ptr) {
    // Each of these takes the token's lock; a held lock would deadlock here.
    attach_result = token.attach_cancellable(late);
    has_cancellables = token.has_cancellables();
  };
  REQUIRE(token.attach_cancellable(c));
  token.cancel();
  CHECK_FALSE(attach_result);
  CHECK_FALSE(has_cancellables);
}

TEST_CASE("the none token is never cancelled and attaching to it does nothing", "[token]") {
  auto none = CancellationToken::none();
  RecordingCancellable c;
  CHECK(none.is_none());
  CHECK(none.attach_cancellable(c));
  CHECK_FALSE(none.has_cancellables());
  CHECK_FALSE(none.cancel());
  CHECK_FALSE(none.is_cancelled());
  CHECK(none.exception() == nullptr);
  CHECK_FALSE(none.stop_token().stop_possible());
  CHECK(c.calls() == 0);
}

TEST_CASE("a token's stop_token is stop-requested when the token is cancelled", "[token]") {
  CancellationToken token;
  auto stop = token.stop_token();
  CHECK(stop.stop_possible());
  CHECK_FALSE(stop.stop_requested());
  bool callback_ran = false;
  std::stop_callback callback(stop, [&] { callback_ran = true; });
  token.cancel();
  CHECK(stop.stop_requested());
  CHECK(callback_ran);
}

TEST_CASE("the stop_token of a cancelled token is already stop-requested", "[token]") {
  CancellationToken token;
  token.cancel();
  CHECK(token.stop_token().stop_requested());
}

TEST_CASE("merge returns a token cancelled by either token", "[token]") {
  CancellationToken a;
  CancellationToken b;
  MergedCancellationToken merged = a.merge(b);
  CHECK_FALSE(merged.is_cancelled());
  b.cancel();
  CHECK(merged.is_cancelled());
  CHECK(merged.exception() == b.exception());
}

TEST_CASE("many threads cancelling at once: exactly one wins and its exception is kept",
          "[token][concurrency]") {
  for (int round = 0; round < 200; ++round) {
    CancellationToken token;
    constexpr int kThreads = 8;
    std::vector<std::exception_ptr> errors;
    for (int i = 0; i < kThreads; ++i) errors.push_back(std::make_exception_ptr(MyError()));
    std::vector<char> won(kThreads, 0);
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&, i] {
        ready.fetch_add(1);
        while (ready.load() < kThreads) {
        }
        won[i] = token.cancel(errors[i]) ? 1 : 0;
      });
    }
    for (auto& t : threads) t.join();
    int winners = 0;
    for (int i = 0; i < kThreads; ++i) {
      if (won[i]) {
        ++winners;
        REQUIRE(token.exception() == errors[i]);
      }
    }
    REQUIRE(winners == 1);
  }
}

TEST_CASE("attaching while another thread cancels notifies exactly the cancellables that attached",
          "[token][concurrency]") {
  for (int round = 0; round < 50; ++round) {
    CancellationToken token;
    REQUIRE(test_support::attach_race_violations(token, {[token] { token.cancel(); }}) == 0);
    REQUIRE_FALSE(token.has_cancellables());
  }
}
