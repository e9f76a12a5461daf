#include "cancellable/task_group.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "cancellable/cancellable_completer.hpp"
#include "cancellable/exceptions.hpp"

using namespace cancellable;

namespace {

// A child the test drives: its future fails when its token is cancelled (as
// every cancellable operation's does), and it settles only when the test
// says so (as a worker is reaped after its future failed).
struct DrivenChild {
  explicit DrivenChild(const CancellationToken& token) : result(token) {}
  CancellableCompleter<int> result;
  CancellableCompleter<void> settle;
};

struct DrivenRun {
  std::shared_ptr<DrivenChild> child;
  Future<int> future() const { return child->result.future(); }
  Future<void> settled() const { return child->settle.future(); }
};

std::shared_ptr<DrivenChild> start(TaskGroup& group, Future<int>* future = nullptr) {
  std::shared_ptr<DrivenChild> child;
  auto f = group.spawn([&](const CancellationToken& token) {
    child = std::make_shared<DrivenChild>(token);
    return DrivenRun{child};
  });
  if (future) *future = f;
  return child;
}

}  // namespace

TEST_CASE("a task group's join completes only once every child has settled", "[group]") {
  TaskGroup group;
  Future<int> a_future;
  auto a = start(group, &a_future);
  auto b = start(group);
  auto joined = group.join();
  a->result.complete(1);
  b->result.complete(2);
  CHECK(a_future.get() == 1);
  a->settle.complete();
  CHECK_FALSE(joined.is_ready());  // b's result came, b has not settled
  CHECK(group.running() == 1);
  b->settle.complete();
  REQUIRE(joined.is_ready());
  CHECK_NOTHROW(joined.get());
  CHECK(group.running() == 0);
}

TEST_CASE("a child's failure cancels its siblings at once, whatever the slowest child does", "[group]") {
  TaskGroup group;
  Future<int> slow_future;
  auto slow = start(group, &slow_future);
  Future<int> failing_future;
  auto failing = start(group, &failing_future);
  const auto error = std::make_exception_ptr(std::runtime_error("disk full"));
  failing->result.complete_error(error);
  // The slow child's future failed inside that call, with a cancellation
  // naming the failure; the slow child never completed by itself.
  REQUIRE(slow_future.is_ready());
  CHECK_THROWS_AS(slow_future.get(), CancelledException);
  CHECK_THROWS_WITH(slow_future.get(), Catch::Contains("disk full"));
  CHECK(group.token().is_cancelled());
  auto joined = group.join();
  failing->settle.complete();
  CHECK_FALSE(joined.is_ready());  // still waits for the slow child to settle
  slow->settle.complete();
  REQUIRE(joined.is_ready());
  CHECK(joined.exception() == error);  // the first failure, not the cancellation it caused
}

TEST_CASE("with keep_going a child's failure leaves its siblings running and join reports it", "[group]") {
  TaskGroup group(CancellationToken::none(), ChildFailure::keep_going);
  Future<int> other_future;
  auto other = start(group, &other_future);
  auto failing = start(group);
  const auto error = std::make_exception_ptr(std::runtime_error("one bad input"));
  failing->result.complete_error(error);
  failing->settle.complete();
  CHECK_FALSE(other_future.is_ready());
  CHECK_FALSE(group.token().is_cancelled());
  other->result.complete(5);
  other->settle.complete();
  CHECK(other_future.get() == 5);
  CHECK(group.join().exception() == error);
}

TEST_CASE("cancelling the parent token cancels the group's children, and the group never cancels its parent",
          "[group]") {
  CancellationToken parent;
  {
    TaskGroup group(parent);
    Future<int> child_future;
    auto child = start(group, &child_future);
    auto failing = start(group);
    failing->result.complete_error(std::make_exception_ptr(std::runtime_error("x")));
    failing->settle.complete();
    CHECK(child_future.is_ready());  // cancelled by the group...
    CHECK_FALSE(parent.is_cancelled());  // ...which leaves its parent alone
    child->settle.complete();
  }
  {
    TaskGroup group(parent);
    Future<int> child_future;
    auto child = start(group, &child_future);
    parent.cancel_with_reason("user navigated away");
    REQUIRE(child_future.is_ready());
    CHECK(child_future.exception() == parent.exception());
    CHECK(group.token().is_cancelled());
    child->settle.complete();
    CHECK(group.join().exception() == parent.exception());
  }
  CHECK_FALSE(parent.has_cancellables());
}

TEST_CASE("a failure inside a nested group cancels the outer group through the inner join", "[group]") {
  TaskGroup outer;
  Future<int> sibling_future;
  auto sibling = start(outer, &sibling_future);
  std::shared_ptr<DrivenChild> inner_child;
  auto inner = std::make_shared<TaskGroup>(outer.token());
  (void)outer.spawn([&] {
    inner_child = start(*inner);
    return inner->join();
  });
  const auto error = std::make_exception_ptr(std::invalid_argument("bad row"));
  inner_child->result.complete_error(error);
  CHECK_FALSE(sibling_future.is_ready());  // the inner group has not settled yet
  inner_child->settle.complete();          // inner join fails -> outer child failed
  REQUIRE(sibling_future.is_ready());
  CHECK_THROWS_AS(sibling_future.get(), CancelledException);
  sibling->settle.complete();
  CHECK(outer.join().exception() == error);
}

TEST_CASE("children may spawn while join waits, and spawn after join completed is a std::logic_error",
          "[group]") {
  TaskGroup group;
  auto first = start(group);
  auto joined = group.join();
  auto second = start(group);  // e.g. from inside a child
  first->result.complete(1);
  first->settle.complete();
  CHECK_FALSE(joined.is_ready());
  second->result.complete(2);
  second->settle.complete();
  REQUIRE(joined.is_ready());
  CHECK_THROWS_AS(group.spawn([] { return 1; }), std::logic_error);
  CHECK(group.join().state() == joined.state());
}

TEST_CASE("a task group's when_any cancels the losers, whose cancellation is not a failure", "[group]") {
  TaskGroup group;
  std::shared_ptr<DrivenChild> a, b, c;
  auto make = [](std::shared_ptr<DrivenChild>& out) {
    return [&out](const CancellationToken& token) {
      out = std::make_shared<DrivenChild>(token);
      return DrivenRun{out};
    };
  };
  auto any = group.when_any(make(a), make(b), make(c));
  b->result.complete(42);
  REQUIRE(any.is_ready());
  CHECK(any.get().index == 1);
  CHECK(any.get().value == 42);
  CHECK(a->result.is_cancelled());
  CHECK(c->result.is_cancelled());
  CHECK_FALSE(group.token().is_cancelled());
  auto joined = group.join();
  a->settle.complete();
  b->settle.complete();
  CHECK_FALSE(joined.is_ready());
  c->settle.complete();
  REQUIRE(joined.is_ready());
  CHECK_NOTHROW(joined.get());
}

TEST_CASE("a child that throws, or returns a plain value or future, is a child like any other", "[group]") {
  TaskGroup group(CancellationToken::none(), ChildFailure::keep_going);
  auto value = group.spawn([] { return 7; });
  auto nothing = group.spawn([](const CancellationToken&) {});
  CancellableCompleter<std::string> later;
  auto future = group.spawn([&] { return later.future(); });
  auto thrown = group.spawn([]() -> Future<int> { throw std::runtime_error("could not start"); });
  CHECK(value.get() == 7);
  CHECK_NOTHROW(nothing.get());
  CHECK_THROWS_WITH(thrown.get(), "could not start");
  auto joined = group.join();
  CHECK_FALSE(joined.is_ready());
  later.complete("done");
  REQUIRE(joined.is_ready());
  CHECK_THROWS_WITH(joined.get(), "could not start");
}

TEST_CASE("a task group's destructor cancels its children and returns only once they have settled", "[group]") {
  CancellationToken parent;
  std::atomic<bool> settled_before_return{false};
  std::thread reaper;
  {
    TaskGroup group(parent);
    Future<int> child_future;
    auto child = start(group, &child_future);
    // Settles the child once its future failed, from another thread (as a
    // reaper would).
    reaper = std::thread([child, child_future, &settled_before_return] {
      child_future.wait();
      settled_before_return.store(true);
      child->settle.complete();
    });
  }  // ~TaskGroup: cancel, then wait
  CHECK(settled_before_return.load());
  reaper.join();
  CHECK_FALSE(parent.is_cancelled());
  CHECK_FALSE(parent.has_cancellables());
}

TEST_CASE("children spawned and failing on many threads are all waited for", "[group]") {
  TaskGroup group(CancellationToken::none(), ChildFailure::keep_going);
  constexpr int kThreads = 4, kEach = 50;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&group, t] {
      for (int i = 0; i < kEach; ++i) {
        CancellableCompleter<int> c(group.token());
        (void)group.spawn([&] { return c.future(); });
        if ((i + t) % 7 == 0) {
          c.complete_error(std::make_exception_ptr(std::runtime_error("odd one")));
        } else {
          c.complete(i);
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  auto joined = group.join();
  REQUIRE(joined.is_ready());
  CHECK_THROWS_WITH(joined.get(), "odd one");
  CHECK(group.running() == 0);
}
