// The progress scenario both backends are tested with: work that reports
// "half way" (5 of 10), then waits to be cancelled (thread) or killed
// (process). What the caller saw is returned; the tests check it (never
// from the callback's thread).
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <vector>

#include <catch2/catch.hpp>

#include "cancellable/isolate.hpp"
#include "support/test_support.hpp"

namespace test_support {

struct ProgressSeen {
  bool reached_half = false;                        // the callback saw 5 of 10
  std::optional<cancellable::Progress> latest;      // isolate.progress() then
  bool exited = false;                              // exited() completed after the cancel
  std::vector<cancellable::Progress> seen;          // every callback, in order
};

inline ProgressSeen run_reporting_half_way(cancellable::Backend backend) {
  using namespace std::chrono_literals;
  auto mutex = std::make_shared<std::mutex>();
  auto seen = std::make_shared<std::vector<cancellable::Progress>>();
  auto reached_half = std::make_shared<Event>();
  cancellable::IsolateOptions options;
  options.backend = backend;
  options.progress_interval = 1ms;
  options.on_progress = [mutex, seen, reached_half](const cancellable::Progress& p) {
    std::lock_guard lock(*mutex);
    seen->push_back(p);
    if (p.done == 5) reached_half->set();
  };
  cancellable::CancellationToken token;
  auto isolate = cancellable::CancellableIsolate::spawn([](std::stop_token stop) {
    cancellable::report_progress(5, 10, "half way");
    Event stopped;
    std::stop_callback on_stop(stop, [&] { stopped.set(); });
    stopped.wait(std::chrono::hours(1));
    return 0;
  }, token, options);
  ProgressSeen out;
  out.reached_half = reached_half->wait();
  out.latest = isolate.progress();
  token.cancel();
  out.exited = isolate.exited().wait_for(kDeadline) == std::future_status::ready;
  std::lock_guard lock(*mutex);
  out.seen = *seen;
  return out;
}

// Runs the scenario with backend and checks, on the test's thread, that the
// caller saw the progress (callback and progress()) and the run ended.
inline void check_progress_reaches_caller(cancellable::Backend backend) {
  const cancellable::Progress half{5, 10, "half way"};
  const auto run = run_reporting_half_way(backend);
  REQUIRE(run.reached_half);
  REQUIRE(run.latest.has_value());
  CHECK(*run.latest == half);
  REQUIRE(run.exited);
  REQUIRE_FALSE(run.seen.empty());
  CHECK(run.seen.front() == half);
}

}  // namespace test_support
