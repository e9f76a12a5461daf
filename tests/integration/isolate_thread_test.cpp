// The thread backend of CancellableIsolate: running, waiting, cancelling and
// delivering on threads of this process. Nothing here forks, so these tests
// also run under ThreadSanitizer (label "thread").
#include "cancellable/isolate.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "cancellable/exceptions.hpp"
#include "support/progress_support.hpp"
#include "support/test_support.hpp"

using namespace cancellable;
using namespace std::chrono_literals;
using test_support::Event;

namespace {

struct EnvironmentVariable {
  EnvironmentVariable(const char* name, const char* value) : name_(name) { ::setenv(name, value, 1); }
  ~EnvironmentVariable() { ::unsetenv(name_); }
  const char* name_;
};

IsolateOptions on_a_thread() {
  IsolateOptions options;
  options.backend = Backend::thread;
  return options;
}

}  // namespace

TEST_CASE("Backend::thread runs the work on a thread of this process", "[isolate][thread]") {
  auto isolate = CancellableIsolate::spawn([] { return ::getpid(); }, CancellationToken::none(), on_a_thread());
  CHECK(isolate.future().get() == ::getpid());
  CHECK(isolate.backend() == Backend::thread);
  CHECK(isolate.pid() == 0);
  REQUIRE(isolate.exited().wait_for(test_support::kDeadline) == std::future_status::ready);
}

TEST_CASE("CANCELLABLE_BACKEND=thread forces the thread backend", "[isolate][thread]") {
  EnvironmentVariable env("CANCELLABLE_BACKEND", "thread");
  auto isolate = CancellableIsolate::spawn([] { return ::getpid(); });
  CHECK(isolate.future().get() == ::getpid());
  CHECK(isolate.backend() == Backend::thread);
}

TEST_CASE("an invalid CANCELLABLE_BACKEND fails the run with std::invalid_argument", "[isolate][thread]") {
  EnvironmentVariable env("CANCELLABLE_BACKEND", "quantum");
  auto f = CancellableIsolate::run([] { return 1; });
  CHECK_THROWS_AS(f.get(), std::invalid_argument);
}

TEST_CASE("cancelling a thread isolate fails the future at once and the work can stop early",
          "[isolate][thread]") {
  CancellationToken token;
  auto started = std::make_shared<Event>();
  auto isolate = CancellableIsolate::spawn([started](std::stop_token stop) {
    started->set();
    Event stopped;
    std::stop_callback on_stop(stop, [&] { stopped.set(); });
    stopped.wait();
    return 1;
  }, token, on_a_thread());
  REQUIRE(started->wait());
  token.cancel();
  CHECK(isolate.future().is_ready());
  CHECK(isolate.future().state()->error() == token.exception());
  // The work saw the stop request and returned: the thread is done.
  REQUIRE(isolate.exited().wait_for(test_support::kDeadline) == std::future_status::ready);
}

TEST_CASE("exceptions from a thread isolate reach the caller unchanged", "[isolate][thread]") {
  auto f = CancellableIsolate::run([]() -> int { throw std::out_of_range("thread"); },
                                   CancellationToken::none(), on_a_thread());
  CHECK_THROWS_AS(f.get(), std::out_of_range);
}

TEST_CASE("a thread isolate's result reaches every thread waiting for it", "[isolate][thread]") {
  auto release = std::make_shared<Event>();
  auto isolate = CancellableIsolate::spawn([release] {
    release->wait();
    return std::vector<std::string>{"a", "bb", "ccc"};
  }, CancellationToken::none(), on_a_thread());
  constexpr int kWaiters = 4;
  std::vector<std::optional<std::vector<std::string>>> results(kWaiters);
  std::vector<std::optional<ProcessExit>> exits(kWaiters);
  std::vector<std::thread> waiters;
  for (int i = 0; i < kWaiters; ++i) {
    waiters.emplace_back([&, i, future = isolate.future(), exited = isolate.exited()]() mutable {
      if (i % 2 == 0) {
        results[i] = future.get();
      } else {
        exits[i] = exited.get();
      }
    });
  }
  release->set();
  for (auto& t : waiters) t.join();
  for (int i = 0; i < kWaiters; ++i) {
    if (i % 2 == 0) {
      REQUIRE(results[i].has_value());
      CHECK(*results[i] == std::vector<std::string>{"a", "bb", "ccc"});
    } else {
      REQUIRE(exits[i].has_value());
      CHECK(*exits[i] == ProcessExit{});
    }
  }
}

TEST_CASE("exited() of a thread isolate completes only once the work has returned", "[isolate][thread]") {
  CancellationToken token;
  auto started = std::make_shared<Event>();
  auto release = std::make_shared<Event>();
  auto returned = std::make_shared<std::atomic<bool>>(false);
  auto isolate = CancellableIsolate::spawn([started, release, returned] {
    started->set();
    release->wait();
    returned->store(true);
    return 0;
  }, token, on_a_thread());
  REQUIRE(started->wait());  // (cancelled before it starts, the work would be skipped)
  token.cancel();  // the future fails now; the thread cannot be stopped
  CHECK(isolate.future().is_ready());
  CHECK(isolate.exited().wait_for(0s) == std::future_status::timeout);
  release->set();
  REQUIRE(isolate.exited().wait_for(test_support::kDeadline) == std::future_status::ready);
  CHECK(returned->load());
}

TEST_CASE("thread isolates cancelled at any moment fail with the token's exception or deliver",
          "[isolate][thread]") {
  // The cancel races the start, the work and the delivery; each run ends
  // exactly one way, and every thread ends.
  constexpr int kRuns = 300;
  int delivered = 0;
  int cancelled = 0;
  for (int i = 0; i < kRuns; ++i) {
    CancellationToken token;
    auto isolate = CancellableIsolate::spawn([i] { return i; }, token, on_a_thread());
    std::thread canceller([&token] { token.cancel(); });
    canceller.join();
    auto future = isolate.future();
    REQUIRE(future.wait_for(test_support::kDeadline) == std::future_status::ready);
    if (auto error = future.exception()) {
      CHECK(error == token.exception());
      ++cancelled;
    } else {
      CHECK(future.get() == i);
      ++delivered;
    }
    REQUIRE(isolate.exited().wait_for(test_support::kDeadline) == std::future_status::ready);
    CHECK_FALSE(token.has_cancellables());
  }
  CHECK(delivered + cancelled == kRuns);
}

TEST_CASE("progress reported on a thread reaches the caller's callback", "[isolate][thread][progress]") {
  test_support::check_progress_reaches_caller(Backend::thread);
}
