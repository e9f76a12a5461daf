#include "cancellable/merged_cancellation_token.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include "cancellable/cancellable_completer.hpp"
#include "cancellable/exceptions.hpp"
#include "support/test_support.hpp"

using namespace cancellable;
using test_support::RecordingCancellable;

namespace {
std::exception_ptr error(const char* text) { return std::make_exception_ptr(std::runtime_error(text)); }
}  // namespace

TEST_CASE("a merged token is cancelled when any of its tokens is", "[merged]") {
  CancellationToken a;
  CancellationToken b;
  CancellationToken c;
  MergedCancellationToken merged{a, b, c};
  CHECK_FALSE(merged.is_cancelled());
  auto which = GENERATE(0, 1, 2);
  CancellationToken tokens[] = {a, b, c};
  auto e = error("boom");
  tokens[which].cancel(e);
  CHECK(merged.is_cancelled());
  CHECK(merged.exception() == e);
}

TEST_CASE("a merged token notifies its cancellables when one of its tokens is cancelled",
          "[merged]") {
  CancellationToken a;
  CancellationToken b;
  MergedCancellationToken merged{a, b};
  RecordingCancellable c;
  REQUIRE(c.maybe_attach(merged));
  auto e = error("b");
  b.cancel(e);
  CHECK(c.calls() == 1);
  CHECK(c.last_exception() == e);
}

TEST_CASE("a merged token is cancelled at construction if one of its tokens already is",
          "[merged]") {
  CancellationToken a;
  CancellationToken b;
  auto eb = error("b");
  b.cancel(eb);
  MergedCancellationToken merged{a, b};
  CHECK(merged.is_cancelled());
  CHECK(merged.exception() == eb);
  RecordingCancellable c;
  CHECK_FALSE(c.maybe_attach(merged));
  CHECK(c.last_exception() == eb);
  CHECK_FALSE(b.has_cancellables());
  CHECK_FALSE(a.has_cancellables());
}

TEST_CASE("cancelling a merged token does not cancel the tokens it merges", "[merged]") {
  CancellationToken a;
  CancellationToken b;
  MergedCancellationToken merged{a, b};
  RecordingCancellable c;
  REQUIRE(c.maybe_attach(merged));
  auto own = error("own");
  CHECK(merged.cancel(own));
  CHECK(merged.is_cancelled());
  CHECK(merged.exception() == own);
  CHECK(c.last_exception() == own);
  CHECK_FALSE(a.is_cancelled());
  CHECK_FALSE(b.is_cancelled());
  CHECK_FALSE(a.has_cancellables());
  CHECK_FALSE(b.has_cancellables());
}

TEST_CASE("a merged token attaches to its tokens only while it has cancellables", "[merged]") {
  CancellationToken a;
  CancellationToken b;
  MergedCancellationToken merged{a, b};
  CHECK_FALSE(a.has_cancellables());
  RecordingCancellable first;
  RecordingCancellable second;
  REQUIRE(first.maybe_attach(merged));
  REQUIRE(second.maybe_attach(merged));
  CHECK(a.has_cancellables());
  CHECK(b.has_cancellables());
  first.detach();
  CHECK(a.has_cancellables());
  second.detach();
  CHECK_FALSE(merged.has_cancellables());
  CHECK_FALSE(a.has_cancellables());
  CHECK_FALSE(b.has_cancellables());
}

TEST_CASE("after one of its tokens cancels it, a merged token is attached to none of them",
          "[merged]") {
  CancellationToken a;
  CancellationToken b;
  CancellationToken c;
  MergedCancellationToken merged{a, b, c};
  RecordingCancellable r;
  REQUIRE(r.maybe_attach(merged));
  b.cancel();
  CHECK_FALSE(a.has_cancellables());
  CHECK_FALSE(c.has_cancellables());
  CHECK_FALSE(merged.has_cancellables());
}

TEST_CASE("with something attached, the exception is that of the token cancelled first in time",
          "[merged]") {
  CancellationToken a;
  CancellationToken b;
  MergedCancellationToken merged{a, b};
  RecordingCancellable r;
  REQUIRE(r.maybe_attach(merged));
  auto eb = error("b first");
  b.cancel(eb);
  a.cancel(error("a second"));
  CHECK(merged.exception() == eb);
  CHECK(r.last_exception() == eb);
}

TEST_CASE("with nothing attached, the exception is that of the first cancelled token in list order",
          "[merged]") {
  CancellationToken a;
  CancellationToken b;
  MergedCancellationToken merged{a, b};
  auto eb = error("b second in list");
  auto ea = error("a first in list");
  b.cancel(eb);
  a.cancel(ea);
  CHECK(merged.exception() == ea);
}

TEST_CASE("the first exception read from a merged token stays its exception", "[merged]") {
  CancellationToken a;
  CancellationToken b;
  MergedCancellationToken merged{a, b};
  auto eb = error("b first in time");
  b.cancel(eb);
  const auto seen = merged.exception();
  REQUIRE(seen == eb);
  a.cancel(error("a first in list, cancelled later"));
  CHECK(merged.exception() == seen);
  SECTION("work started later fails with it") {
    CancellableCompleter<int> completer(merged);
    CHECK(completer.future().state()->error() == seen);
  }
  SECTION("its own cancel changes nothing") {
    CHECK_FALSE(merged.cancel(error("own")));
    CHECK(merged.exception() == seen);
  }
}

TEST_CASE("a merged token cancelled by its own cancel keeps that exception", "[merged]") {
  CancellationToken a;
  MergedCancellationToken merged{a};
  auto own = error("own");
  merged.cancel(own);
  a.cancel(error("later"));
  CHECK(merged.exception() == own);
}

TEST_CASE("merged tokens created per request leave nothing on a long-lived token", "[merged]") {
  CancellationToken shutdown;
  for (int i = 0; i < 1000; ++i) {
    CancellationToken request;
    MergedCancellationToken merged{shutdown, request};
    CancellableCompleter<int> completer(merged);
    if (i % 3 == 0) {
      request.cancel();
    } else if (i % 3 == 1) {
      completer.complete(i);
    } else {
      completer.complete_error(error("failed"));
    }
    REQUIRE_FALSE(shutdown.has_cancellables());
  }
}

TEST_CASE("a merged token's stop_token is stop-requested when one of its tokens is cancelled",
          "[merged]") {
  CancellationToken a;
  CancellationToken b;
  MergedCancellationToken merged{a, b};
  auto stop = merged.stop_token();
  CHECK_FALSE(stop.stop_requested());
  a.cancel();
  CHECK(stop.stop_requested());
  CHECK_FALSE(b.has_cancellables());
}

TEST_CASE("a merged token can merge merged tokens", "[merged]") {
  CancellationToken a;
  CancellationToken b;
  CancellationToken c;
  MergedCancellationToken inner{a, b};
  MergedCancellationToken outer{inner, c};
  RecordingCancellable r;
  REQUIRE(r.maybe_attach(outer));
  CHECK(a.has_cancellables());
  auto ea = error("a");
  a.cancel(ea);
  CHECK(r.last_exception() == ea);
  CHECK_FALSE(b.has_cancellables());
  CHECK_FALSE(c.has_cancellables());
}

TEST_CASE("attaching to a merged token while its tokens are cancelled notifies each attached "
          "cancellable exactly once and leaves nothing behind",
          "[merged][concurrency]") {
  for (int round = 0; round < 100; ++round) {
    CancellationToken a;
    CancellationToken b;
    MergedCancellationToken merged{a, b};
    REQUIRE(test_support::attach_race_violations(merged, {[a] { a.cancel(); }, [b] { b.cancel(); }},
                                                 3, 100) == 0);
    REQUIRE(merged.is_cancelled());
    REQUIRE_FALSE(a.has_cancellables());
    REQUIRE_FALSE(b.has_cancellables());
    REQUIRE_FALSE(merged.has_cancellables());
  }
}

TEST_CASE("attaching and detaching on a merged token from many threads leaves nothing on its "
          "tokens",
          "[merged][concurrency]") {
  CancellationToken a;
  CancellationToken b;
  MergedCancellationToken merged{a, b};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        RecordingCancellable r;
        merged.attach_cancellable(r);
        merged.detach_cancellable(r);
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK_FALSE(merged.has_cancellables());
  CHECK_FALSE(a.has_cancellables());
  CHECK_FALSE(b.has_cancellables());
}

TEST_CASE("an on_cancel may use the merged token it is attached to while a token it merges is "
          "cancelled during the attach",
          "[merged][concurrency]") {
  // The cancel of `a` is aimed at the moment the merged token links itself
  // to `a`. An on_cancel running under the merged token's own lock could not
  // get its stop_token (a deadlock if called inline): the probe asks from
  // another thread and reports whether it got an answer.
  int probes = 0;
  int blocked = 0;
  for (int round = 0; round < 3000 && blocked == 0; ++round) {
    CancellationToken a;
    MergedCancellationToken merged{a};
    std::shared_ptr<test_support::Event> answered;
    std::thread probe_thread;
    RecordingCancellable r;
    r.during_cancel = [&](std::exception_ptr) {
      answered = std::make_shared<test_support::Event>();
      probe_thread = std::thread([merged, answered] {
        (void)merged.stop_token();
        answered->set();
      });
      ++probes;
      if (!answered->wait()) ++blocked;
    };
    std::atomic<bool> go{false};
    std::thread canceller([&] {
      while (!go.load()) {
      }
      a.cancel();
    });
    go.store(true);
    r.maybe_attach(merged);
    canceller.join();
    r.detach();
    if (probe_thread.joinable()) probe_thread.join();
  }
  CHECK(probes > 0);
  CHECK(blocked == 0);
}

TEST_CASE("a merged token can be destroyed while one of its tokens is cancelled on another thread",
          "[merged][concurrency]") {
  for (int round = 0; round < 3000; ++round) {
    CancellationToken a;
    CancellationToken b;
    CancellationToken c;
    std::atomic<bool> go{false};
    std::thread canceller;
    {
      MergedCancellationToken merged{a, b, c};
      (void)merged.stop_token();  // keeps it linked to its tokens
      canceller = std::thread([&] {
        while (!go.load()) {
        }
        b.cancel();
      });
      go.store(true);
    }
    canceller.join();
    REQUIRE_FALSE(a.has_cancellables());
    REQUIRE_FALSE(c.has_cancellables());
  }
}
