#include "cancellable/future.hpp"

#include <catch2/catch.hpp>

#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "cancellable/cancellable_completer.hpp"
#include "cancellable/executor.hpp"
#include "support/test_support.hpp"

using namespace cancellable;
using namespace std::chrono_literals;

namespace {

Future<int> add_async(Future<int> a, Future<int> b) {
  const int x = co_await a;
  const int y = co_await b;
  co_return x + y;
}

Future<void> fail_after(Future<int> a) {
  co_await a;
  throw std::runtime_error("from the coroutine");
}

Future<std::string> catch_in_coroutine(Future<int> failing) {
  try {
    co_await failing;
  } catch (const std::runtime_error& e) {
    co_return std::string("caught: ") + e.what();
  }
  co_return "not caught";
}

}  // namespace

TEST_CASE("a ready future returns its value", "[future]") {
  auto f = make_ready_future(42);
  CHECK(f.valid());
  CHECK(f.is_ready());
  CHECK(f.get() == 42);
  CHECK(f.get() == 42);  // shared result: get() may be called again
}

TEST_CASE("get rethrows the same exception object every time", "[future]") {
  auto e = std::make_exception_ptr(std::runtime_error("bad"));
  auto f = make_failed_future<int>(e);
  std::exception_ptr first;
  std::exception_ptr second;
  try {
    (void)f.get();
  } catch (...) {
    first = std::current_exception();
  }
  try {
    (void)f.get();
  } catch (...) {
    second = std::current_exception();
  }
  CHECK(first == e);
  CHECK(second == e);
}

TEST_CASE("a default-constructed future has no state", "[future]") {
  Future<int> f;
  CHECK_FALSE(f.valid());
  CHECK_THROWS_AS(f.get(), std::future_error);
  CHECK_THROWS_AS(f.is_ready(), std::future_error);
}

TEST_CASE("wait_for reports a timeout while pending and ready once completed", "[future]") {
  CancellableCompleter<int> completer;
  auto f = completer.future();
  CHECK_FALSE(f.is_ready());
  CHECK(f.wait_for(1ms) == std::future_status::timeout);
  completer.complete(7);
  CHECK(f.wait_for(0ms) == std::future_status::ready);
  CHECK(f.is_ready());
}

TEST_CASE("get blocks until another thread completes the future", "[future]") {
  CancellableCompleter<std::string> completer;
  auto f = completer.future();
  std::thread producer([&] { completer.complete("hello"); });
  CHECK(f.get() == "hello");
  producer.join();
}

TEST_CASE("Future<void> completes and fails", "[future]") {
  CancellableCompleter<void> ok;
  ok.complete();
  CHECK_NOTHROW(ok.future().get());
  CancellableCompleter<void> bad;
  bad.complete_error(std::make_exception_ptr(std::logic_error("no")));
  CHECK_THROWS_AS(bad.future().get(), std::logic_error);
}

TEST_CASE("then passes the value to the continuation", "[future]") {
  CancellableCompleter<int> completer;
  auto doubled = completer.future().then([](int v) { return v * 2; });
  auto text = doubled.then([](int v) { return std::to_string(v); });
  CHECK_FALSE(text.is_ready());
  completer.complete(21);
  CHECK(text.get() == "42");
}

TEST_CASE("then on a Future<void> calls the continuation with no argument", "[future]") {
  CancellableCompleter<void> completer;
  auto f = completer.future().then([] { return std::string("after void"); });
  auto g = f.then([](const std::string&) {});
  static_assert(std::is_same_v<decltype(g), Future<void>>);
  completer.complete();
  CHECK(f.get() == "after void");
  CHECK_NOTHROW(g.get());
}

TEST_CASE("then on a ready future runs the continuation inline", "[future]") {
  std::thread::id ran_on;
  auto f = make_ready_future(1).then([&](int) { ran_on = std::this_thread::get_id(); });
  CHECK(f.is_ready());
  CHECK(ran_on == std::this_thread::get_id());
}

TEST_CASE("then runs the continuation on the thread that completes the future", "[future]") {
  CancellableCompleter<int> completer;
  auto ran_on = std::make_shared<std::thread::id>();
  auto f = completer.future().then([ran_on](int) { *ran_on = std::this_thread::get_id(); });
  std::thread::id producer_id;
  std::thread producer([&] {
    producer_id = std::this_thread::get_id();
    completer.complete(1);
  });
  producer.join();
  f.get();
  CHECK(*ran_on == producer_id);
}

TEST_CASE("then with an executor runs the continuation there", "[future]") {
  auto ran_on = std::make_shared<std::thread::id>();
  auto f = make_ready_future(1).then([ran_on](int) { *ran_on = std::this_thread::get_id(); },
                                     default_executor());
  f.get();
  CHECK(*ran_on != std::this_thread::get_id());
}

TEST_CASE("then skips the continuation when the future fails and forwards the error", "[future]") {
  auto e = std::make_exception_ptr(std::runtime_error("first"));
  bool called = false;
  auto f = make_failed_future<int>(e).then([&](int) {
    called = true;
    return 0;
  });
  CHECK_FALSE(called);
  CHECK(f.state()->error() == e);
}

TEST_CASE("a continuation that throws fails the returned future", "[future]") {
  auto f = make_ready_future(1).then([](int) -> int { throw std::out_of_range("range"); });
  CHECK_THROWS_AS(f.get(), std::out_of_range);
}

TEST_CASE("a future returned by a continuation is adopted", "[future]") {
  CancellableCompleter<int> inner;
  auto inner_future = inner.future();
  auto f = make_ready_future(1).then([inner_future](int) { return inner_future; });
  static_assert(std::is_same_v<decltype(f), Future<int>>);
  CHECK_FALSE(f.is_ready());
  inner.complete(5);
  CHECK(f.get() == 5);
}

TEST_CASE("a coroutine can co_await futures and co_return a value", "[future][coroutine]") {
  CancellableCompleter<int> a;
  CancellableCompleter<int> b;
  auto sum = add_async(a.future(), b.future());
  CHECK_FALSE(sum.is_ready());
  a.complete(2);
  CHECK_FALSE(sum.is_ready());
  std::thread producer([&] { b.complete(40); });
  CHECK(sum.get() == 42);
  producer.join();
}

TEST_CASE("co_await of a ready future does not suspend", "[future][coroutine]") {
  auto sum = add_async(make_ready_future(1), make_ready_future(2));
  CHECK(sum.is_ready());
  CHECK(sum.get() == 3);
}

TEST_CASE("an exception thrown in a coroutine fails its future", "[future][coroutine]") {
  auto f = fail_after(make_ready_future(1));
  CHECK_THROWS_AS(f.get(), std::runtime_error);
}

TEST_CASE("co_await of a failed future throws inside the coroutine", "[future][coroutine]") {
  auto f = catch_in_coroutine(make_failed_future<int>(std::make_exception_ptr(std::runtime_error("x"))));
  CHECK(f.get() == "caught: x");
}

TEST_CASE("exception() tells how a future failed without a try", "[future]") {
  CancellableCompleter<int> completer;
  auto f = completer.future();
  CHECK(f.exception() == nullptr);  // pending
  auto error = std::make_exception_ptr(std::runtime_error("failed"));
  completer.complete_error(error);
  CHECK(f.exception() == error);
  CHECK(make_ready_future(1).exception() == nullptr);
  CHECK_THROWS_AS(Future<int>().exception(), std::future_error);
}

TEST_CASE("get() on a temporary future returns the value by copy", "[future]") {
  auto make = [] { return make_ready_future(std::string(1000, 'v')); };
  auto&& value = make().get();  // the temporary future is gone after this line
  static_assert(std::is_same_v<decltype(make().get()), std::string>);
  CHECK(value == std::string(1000, 'v'));
  Future<std::string> kept = make();
  static_assert(std::is_same_v<decltype(kept.get()), const std::string&>);
  CHECK(&kept.get() == &kept.get());  // a future object still returns its shared value
}
