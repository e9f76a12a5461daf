#include "cancellable/ignore_cancellation.hpp"

#include <catch2/catch.hpp>

#include <stdexcept>
#include <string>
#include <vector>

#include "cancellable/cancellable_completer.hpp"
#include "cancellable/exceptions.hpp"

using namespace cancellable;

namespace {

struct Recorder {
  std::vector<std::string> events;
  std::exception_ptr error;

  IgnoreCancellationCallbacks callbacks(bool with_on_error = true) {
    IgnoreCancellationCallbacks c;
    if (with_on_error) {
      c.on_error = [this](std::exception_ptr e) {
        events.push_back("on_error");
        error = e;
      };
    }
    c.when_complete = [this] { events.push_back("when_complete"); };
    c.when_complete_or_cancelled = [this] { events.push_back("when_complete_or_cancelled"); };
    return c;
  }
};

struct UserCancelled : CancelledException {
  UserCancelled() : CancelledException("user") {}
};

}  // namespace

TEST_CASE("ignore_cancellation on success calls when_complete then when_complete_or_cancelled",
          "[ignore_cancellation]") {
  Recorder r;
  auto f = ignore_cancellation([] { return 1; }, r.callbacks());
  f.get();
  CHECK(r.events == std::vector<std::string>{"when_complete", "when_complete_or_cancelled"});
}

TEST_CASE("ignore_cancellation swallows a CancelledException and skips when_complete",
          "[ignore_cancellation]") {
  Recorder r;
  auto error = GENERATE(as<std::exception_ptr>{}, std::make_exception_ptr(CancelledException()),
                        std::make_exception_ptr(UserCancelled()));
  auto f = ignore_cancellation([error]() -> int { std::rethrow_exception(error); }, r.callbacks());
  CHECK_NOTHROW(f.get());
  CHECK(r.events == std::vector<std::string>{"when_complete_or_cancelled"});
}

TEST_CASE("ignore_cancellation passes other errors to on_error, then when_complete, then "
          "when_complete_or_cancelled",
          "[ignore_cancellation]") {
  Recorder r;
  auto error = std::make_exception_ptr(std::runtime_error("real failure"));
  auto f = ignore_cancellation([error]() -> int { std::rethrow_exception(error); }, r.callbacks());
  CHECK_NOTHROW(f.get());
  CHECK(r.error == error);
  CHECK(r.events ==
        std::vector<std::string>{"on_error", "when_complete", "when_complete_or_cancelled"});
}

TEST_CASE("ignore_cancellation without on_error rethrows other errors after the callbacks",
          "[ignore_cancellation]") {
  Recorder r;
  auto error = std::make_exception_ptr(std::runtime_error("real failure"));
  auto f = ignore_cancellation([error]() -> int { std::rethrow_exception(error); },
                               r.callbacks(false));
  CHECK(r.events == std::vector<std::string>{"when_complete", "when_complete_or_cancelled"});
  CHECK(f.state()->error() == error);
}

TEST_CASE("ignore_cancellation does not swallow a TimeoutException", "[ignore_cancellation]") {
  Recorder r;
  auto f = ignore_cancellation(
      []() -> int { throw TimeoutException(std::chrono::milliseconds(5)); }, r.callbacks(false));
  CHECK_THROWS_AS(f.get(), TimeoutException);
  CHECK(r.events == std::vector<std::string>{"when_complete", "when_complete_or_cancelled"});
}

TEST_CASE("ignore_cancellation waits for an operation that returns a future",
          "[ignore_cancellation]") {
  Recorder r;
  CancellationToken token;
  CancellableCompleter<int> completer(token);
  auto f = ignore_cancellation([&] { return completer.future(); }, r.callbacks());
  CHECK(r.events.empty());
  token.cancel();
  CHECK_NOTHROW(f.get());
  CHECK(r.events == std::vector<std::string>{"when_complete_or_cancelled"});
}

TEST_CASE("a throwing callback fails the returned future but later callbacks still run",
          "[ignore_cancellation]") {
  bool last_ran = false;
  auto f = ignore_cancellation([] { return 1; },
                               {.when_complete = [] { throw std::logic_error("callback"); },
                                .when_complete_or_cancelled = [&] { last_ran = true; }});
  CHECK_THROWS_AS(f.get(), std::logic_error);
  CHECK(last_ran);
}
