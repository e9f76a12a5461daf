#include "cancellable/cancellable_completer.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <future>
#include <stdexcept>
#include <thread>

#include "cancellable/exceptions.hpp"
#include "support/test_support.hpp"

using namespace cancellable;

TEST_CASE("a completer on a cancelled token is cancelled at once and runs on_cancel", "[completer]") {
  CancellationToken token;
  token.cancel();
  int on_cancel_calls = 0;
  CancellableCompleter<int> completer(token, [&] { ++on_cancel_calls; });
  CHECK(completer.is_cancelled());
  CHECK(completer.is_completed());
  CHECK(on_cancel_calls == 1);
  auto f = completer.future();
  REQUIRE(f.is_ready());
  CHECK(f.state()->error() == token.exception());
  CHECK_FALSE(token.has_cancellables());
}

TEST_CASE("a cancelled completer's future fails inside cancel, before on_cancel runs",
          "[completer]") {
  CancellationToken token;
  bool ready_when_on_cancel_ran = false;
  Future<int> f;
  CancellableCompleter<int> completer(token, [&] { ready_when_on_cancel_ran = f.is_ready(); });
  f = completer.future();
  CHECK_FALSE(f.is_ready());
  auto e = std::make_exception_ptr(std::runtime_error("stop"));
  token.cancel(e);
  CHECK(f.is_ready());  // already failed when cancel() returns
  CHECK(ready_when_on_cancel_ran);
  CHECK(f.state()->error() == e);
  CHECK(completer.is_cancelled());
  CHECK_FALSE(token.has_cancellables());
}

TEST_CASE("completing after cancellation is silently ignored", "[completer]") {
  CancellationToken token;
  CancellableCompleter<int> completer(token);
  token.cancel();
  CHECK_NOTHROW(completer.complete(1));
  CHECK_NOTHROW(completer.complete(2));
  CHECK_NOTHROW(completer.complete_error(std::make_exception_ptr(std::runtime_error("x"))));
  CHECK_THROWS_AS(completer.future().get(), CancelledException);
}

TEST_CASE("completing twice without cancellation is a std::logic_error", "[completer]") {
  CancellableCompleter<int> completer{CancellationToken()};
  completer.complete(1);
  CHECK_THROWS_AS(completer.complete(2), std::logic_error);
  CHECK_THROWS_AS(completer.complete_error(std::make_exception_ptr(std::runtime_error("x"))),
                  std::logic_error);
  CHECK(completer.future().get() == 1);

  CancellableCompleter<void> failed{CancellationToken()};
  failed.complete_error(std::make_exception_ptr(std::runtime_error("x")));
  CHECK_THROWS_AS(failed.complete(), std::logic_error);
}

TEST_CASE("complete_error rejects a null exception", "[completer]") {
  CancellableCompleter<int> completer;
  CHECK_THROWS_AS(completer.complete_error(nullptr), std::invalid_argument);
  CHECK_FALSE(completer.is_completed());
}

TEST_CASE("completing detaches the completer from its token", "[completer]") {
  CancellationToken token;
  int on_cancel_calls = 0;
  SECTION("with a value") {
    CancellableCompleter<int> completer(token, [&] { ++on_cancel_calls; });
    CHECK(token.has_cancellables());
    completer.complete(3);
    CHECK_FALSE(token.has_cancellables());
    token.cancel();
    CHECK(completer.future().get() == 3);
    CHECK_FALSE(completer.is_cancelled());
  }
  SECTION("with an error") {
    CancellableCompleter<int> completer(token, [&] { ++on_cancel_calls; });
    auto e = std::make_exception_ptr(std::runtime_error("x"));
    completer.complete_error(e);
    CHECK_FALSE(token.has_cancellables());
    token.cancel();
    CHECK(completer.future().state()->error() == e);
  }
  CHECK(on_cancel_calls == 0);
}

TEST_CASE("a completer destroyed before completing fails its future with broken_promise",
          "[completer]") {
  CancellationToken token;
  Future<int> f;
  {
    CancellableCompleter<int> completer(token);
    f = completer.future();
  }
  CHECK_FALSE(token.has_cancellables());
  try {
    (void)f.get();
    FAIL("expected broken_promise");
  } catch (const std::future_error& e) {
    CHECK(e.code() == std::future_errc::broken_promise);
  }
}

TEST_CASE("cancellation racing completion decides the future exactly once", "[completer][concurrency]") {
  for (int round = 0; round < 2000; ++round) {
    CancellationToken token;
    std::atomic<int> on_cancel_calls{0};
    CancellableCompleter<int> completer(token, [&] { on_cancel_calls.fetch_add(1); });
    auto f = completer.future();
    std::atomic<int> ready{0};
    bool complete_threw = false;
    std::thread completing([&] {
      ready.fetch_add(1);
      while (ready.load() < 2) {
      }
      try {
        completer.complete(round);
      } catch (...) {
        complete_threw = true;
      }
    });
    std::thread cancelling([&] {
      ready.fetch_add(1);
      while (ready.load() < 2) {
      }
      token.cancel();
    });
    completing.join();
    cancelling.join();
    REQUIRE_FALSE(complete_threw);
    REQUIRE(f.is_ready());
    if (f.state()->error()) {
      REQUIRE(f.state()->error() == token.exception());
      REQUIRE(on_cancel_calls.load() == 1);
      REQUIRE(completer.is_cancelled());
    } else {
      REQUIRE(f.get() == round);
      REQUIRE(on_cancel_calls.load() == 0);
      REQUIRE_FALSE(completer.is_cancelled());
    }
    REQUIRE_FALSE(token.has_cancellables());
  }
}
