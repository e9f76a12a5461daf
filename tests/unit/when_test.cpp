#include "cancellable/when.hpp"

#include <catch2/catch.hpp>

#include <future>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <variant>
#include <vector>

#include "cancellable/cancellable_completer.hpp"
#include "cancellable/exceptions.hpp"

using namespace cancellable;

namespace {
std::exception_ptr boom(const char* text = "boom") { return std::make_exception_ptr(std::runtime_error(text)); }
}  // namespace

TEST_CASE("when_all of futures of different types completes with their values in order", "[when]") {
  CancellableCompleter<int> a;
  CancellableCompleter<std::string> b;
  CancellableCompleter<void> c;
  auto all = when_all(a.future(), b.future(), c.future());
  static_assert(std::is_same_v<decltype(all), Future<std::tuple<int, std::string, std::monostate>>>);
  b.complete("two");
  c.complete();
  CHECK_FALSE(all.is_ready());
  a.complete(1);
  REQUIRE(all.is_ready());
  auto [x, y, z] = all.get();
  CHECK(x == 1);
  CHECK(y == "two");
  (void)z;
}

TEST_CASE("when_all fails with the first failure while the slowest input is still pending", "[when]") {
  CancellableCompleter<int> slow;
  CancellableCompleter<int> failing;
  CancellableCompleter<int> done;
  std::vector<Future<int>> inputs{slow.future(), failing.future(), done.future()};
  auto all = when_all(inputs);
  done.complete(3);
  const auto error = boom();
  failing.complete_error(error);
  REQUIRE(all.is_ready());  // slow has not completed
  CHECK(all.exception() == error);
  auto tuple = when_all(slow.future(), failing.future());
  REQUIRE(tuple.is_ready());
  CHECK(tuple.exception() == error);
  // A later failure changes nothing.
  slow.complete_error(boom("later"));
  CHECK(all.exception() == error);
}

TEST_CASE("when_all over a range keeps the range's order whatever the completion order", "[when]") {
  std::vector<CancellableCompleter<int>> completers(5);
  std::vector<Future<int>> inputs;
  for (auto& c : completers) inputs.push_back(c.future());
  auto all = when_all(inputs);
  for (int i : {3, 0, 4, 2, 1}) {
    CHECK_FALSE(all.is_ready());
    completers[i].complete(i * 10);
  }
  CHECK(all.get() == std::vector<int>{0, 10, 20, 30, 40});
}

TEST_CASE("when_all over Future<void> inputs is a Future<void>", "[when]") {
  CancellableCompleter<void> a, b;
  std::vector<Future<void>> inputs{a.future(), b.future()};
  Future<void> all = when_all(inputs);
  a.complete();
  CHECK_FALSE(all.is_ready());
  b.complete();
  CHECK_NOTHROW(all.get());
}

TEST_CASE("when_all of inputs already complete is ready at once, and of none is empty", "[when]") {
  std::vector<Future<int>> ready{make_ready_future(1), make_ready_future(2)};
  auto all = when_all(ready);
  REQUIRE(all.is_ready());
  CHECK(all.get() == std::vector<int>{1, 2});
  auto failed = when_all(std::vector<Future<int>>{make_ready_future(1), make_failed_future<int>(boom("first")),
                                                  make_failed_future<int>(boom("second"))});
  REQUIRE(failed.is_ready());
  CHECK_THROWS_WITH(failed.get(), "first");
  auto none = when_all(std::vector<Future<int>>{});
  REQUIRE(none.is_ready());
  CHECK(none.get().empty());
  CHECK(when_all().is_ready());
}

TEST_CASE("when_all_settled waits for every input and never fails", "[when]") {
  CancellableCompleter<int> a, b;
  CancellableCompleter<void> c;
  std::vector<Future<int>> inputs{a.future(), b.future()};
  auto settled = when_all_settled(inputs);
  auto tuple = when_all_settled(a.future(), c.future());
  const auto error = boom();
  a.complete_error(error);
  CHECK_FALSE(settled.is_ready());
  b.complete(2);
  REQUIRE(settled.is_ready());
  const auto& outcomes = settled.get();
  REQUIRE(outcomes.size() == 2);
  CHECK(outcomes[0].exception() == error);
  CHECK(outcomes[1].get() == 2);
  CHECK_FALSE(tuple.is_ready());
  c.complete();
  REQUIRE(tuple.is_ready());
  CHECK(std::get<0>(tuple.get()).exception() == error);
  CHECK_NOTHROW(std::get<1>(tuple.get()).get());
}

TEST_CASE("when_any completes with the index and value of the first input to complete", "[when]") {
  CancellableCompleter<std::string> a, b, c;
  auto any = when_any(a.future(), b.future(), c.future());
  c.complete("c");
  REQUIRE(any.is_ready());
  CHECK(any.get().index == 2);
  CHECK(any.get().value == "c");
  a.complete("a");
  CHECK(any.get().index == 2);

  CancellableCompleter<void> v, w;
  auto any_void = when_any(std::vector<Future<void>>{v.future(), w.future()});
  w.complete();
  REQUIRE(any_void.is_ready());
  CHECK(any_void.get().index == 1);
}

TEST_CASE("when_any fails when the first input to complete failed", "[when]") {
  CancellableCompleter<int> a, b;
  auto any = when_any(a.future(), b.future());
  const auto error = boom();
  b.complete_error(error);
  REQUIRE(any.is_ready());
  CHECK(any.exception() == error);
  a.complete(1);
  CHECK(any.exception() == error);
}

TEST_CASE("when_any of no futures fails with std::invalid_argument", "[when]") {
  auto any = when_any(std::vector<Future<int>>{});
  REQUIRE(any.is_ready());
  CHECK_THROWS_AS(any.get(), std::invalid_argument);
}

TEST_CASE("a combinator given an invalid future throws std::future_error at the call", "[when]") {
  Future<int> invalid;
  CHECK_THROWS_AS(when_all(std::vector<Future<int>>{invalid}), std::future_error);
  CHECK_THROWS_AS(when_all(make_ready_future(1), invalid), std::future_error);
  CHECK_THROWS_AS(when_any(std::vector<Future<int>>{invalid}), std::future_error);
  CHECK_THROWS_AS(when_all_settled(invalid), std::future_error);
}

TEST_CASE("a combinator's token fails it at once and nothing stays attached afterwards", "[when]") {
  CancellationToken token;
  CancellableCompleter<int> a, b;
  std::vector<Future<int>> inputs{a.future(), b.future()};
  auto all = when_all(inputs, token);
  auto any = when_any(inputs, token);
  auto settled = when_all_settled(inputs, token);
  CHECK(token.has_cancellables());
  token.cancel();
  CHECK(all.exception() == token.exception());
  CHECK(any.exception() == token.exception());
  CHECK(settled.exception() == token.exception());
  CHECK_FALSE(token.has_cancellables());
  a.complete(1);  // The inputs go on; completing them later changes nothing.
  b.complete(2);
  CHECK(all.exception() == token.exception());

  CancellationToken unused;
  CancellableCompleter<int> c;
  std::vector<Future<int>> more{c.future()};
  auto all2 = when_all(more, unused);
  auto any2 = when_any(more, unused);
  auto settled2 = when_all_settled(more, unused);
  c.complete(5);
  CHECK(all2.get() == std::vector<int>{5});
  CHECK(any2.get().value == 5);
  CHECK(settled2.get()[0].get() == 5);
  CHECK_FALSE(unused.has_cancellables());

  CancellationToken cancelled;
  cancelled.cancel();
  CHECK(when_all(more, cancelled).exception() == cancelled.exception());
}

TEST_CASE("when_all and when_any see every input completed concurrently on other threads", "[when]") {
  constexpr int kInputs = 64;
  std::vector<CancellableCompleter<int>> completers(kInputs);
  std::vector<Future<int>> inputs;
  for (auto& c : completers) inputs.push_back(c.future());
  auto all = when_all(inputs);
  auto any = when_any(inputs);
  auto settled = when_all_settled(inputs);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = t; i < kInputs; i += 4) completers[i].complete(i);
    });
  }
  for (auto& thread : threads) thread.join();
  const auto& values = all.get();
  REQUIRE(values.size() == kInputs);
  for (int i = 0; i < kInputs; ++i) CHECK(values[i] == i);
  CHECK(any.get().value == static_cast<int>(any.get().index));
  CHECK(settled.get().size() == kInputs);
}
