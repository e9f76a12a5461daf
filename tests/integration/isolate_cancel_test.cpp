#include "cancellable/isolate.hpp"

#include <catch2/catch.hpp>

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cancellable/exceptions.hpp"
#include "support/spin.hpp"
#include "support/process_support.hpp"
#include "support/test_support.hpp"

using namespace cancellable;
using namespace std::chrono_literals;
using test_support::Event;

extern char** environ;

namespace {

using test_support::burn_cpu_forever;
using test_support::spin_for;
[[noreturn]] void spin_forever() { test_support::pause_forever(); }  // (in pause(): no CPU)

// Options whose progress callback tells the test that the work is running
// (and what it reported), so the test waits on an event instead of sleeping.
struct Running {
  std::shared_ptr<Event> reported = std::make_shared<Event>();
  std::shared_ptr<std::string> stage = std::make_shared<std::string>();

  IsolateOptions options() const {
    IsolateOptions o;
    o.progress_interval = 1ms;
    o.on_progress = [reported = reported, stage = stage](const Progress& p) {
      *stage = p.stage;
      reported->set();
    };
    return o;
  }
  std::string wait() const {
    REQUIRE(reported->wait());
    return *stage;
  }
};

}  // namespace

TEST_CASE("cancelling a running isolate fails the future at once and kills the child",
          "[isolate][cancel]") {
  CancellationToken token;
  Running running;
  auto isolate = CancellableIsolate::spawn([] {
    cancellable::report_progress(1, 1, "running");
    spin_forever();
    return 0;
  }, token, running.options());
  REQUIRE(running.wait() == "running");
  auto error = std::make_exception_ptr(std::runtime_error("user cancelled"));
  token.cancel(error);
  CHECK(isolate.future().is_ready());  // failed inside cancel()
  CHECK(isolate.future().state()->error() == error);
  REQUIRE(isolate.exited().wait_for(test_support::kDeadline) == std::future_status::ready);
  CHECK(isolate.exited().get() == ProcessExit{ProcessExit::Kind::killed, 0, SIGKILL, StopOutcome::killed});
  CHECK(process_support::wait_gone(isolate.pid(), 0ms));
  CHECK_FALSE(token.has_cancellables());
}

TEST_CASE("cancelling kills every process the child started", "[isolate][cancel]") {
  CancellationToken token;
  Running running;
  auto isolate = CancellableIsolate::spawn([] {
    const pid_t grandchild = ::fork();
    if (grandchild == 0) spin_forever();
    cancellable::report_progress(0, 0, std::to_string(grandchild));
    spin_forever();
    return 0;
  }, token, running.options());
  const std::string stage = running.wait();
  const pid_t grandchild = static_cast<pid_t>(std::stol(stage));
  REQUIRE(grandchild > 0);
  token.cancel();
  REQUIRE(isolate.exited().wait_for(test_support::kDeadline) == std::future_status::ready);
  CHECK(process_support::wait_gone(isolate.pid()));
  CHECK(process_support::wait_gone(grandchild));
}

TEST_CASE("a timeout fails the run with TimeoutException and kills the child", "[isolate][limits]") {
  IsolateOptions options;
  options.timeout = 50ms;
  auto isolate = CancellableIsolate::spawn([] {
    spin_forever();
    return 0;
  }, CancellationToken::none(), options);
  REQUIRE(isolate.future().wait_for(test_support::kDeadline) == std::future_status::ready);
  try {
    (void)isolate.future().get();
    FAIL("expected TimeoutException");
  } catch (const TimeoutException& e) {
    CHECK(e.timeout() == 50ms);
  }
  REQUIRE(isolate.exited().wait_for(test_support::kDeadline) == std::future_status::ready);
  CHECK(isolate.exited().get().signal == SIGKILL);
}

TEST_CASE("a memory limit fails an allocation beyond it with MemoryLimitExceeded",
          "[isolate][limits]") {
  IsolateOptions options;
  options.memory_limit_bytes = 64u << 20;
  SECTION("over the limit") {
    auto f = CancellableIsolate::run([] {
#if defined(__SANITIZE_ADDRESS__)
      // AddressSanitizer's operator new cannot throw: it kills the process on
      // failure. Its malloc returns null (allocator_may_return_null=1).
      void* big = std::malloc(512u << 20);
      if (big == nullptr) throw std::bad_alloc();
      std::free(big);
      return std::size_t{512u << 20};
#else
      std::vector<char> big(512u << 20, 'x');
      return big.size();
#endif
    }, CancellationToken::none(), options);
    try {
      (void)f.get();
      FAIL("expected MemoryLimitExceeded");
    } catch (const MemoryLimitExceeded& e) {
      CHECK(e.limit_bytes() == 64u << 20);
      CHECK(std::string(e.what()).find("67108864 bytes") != std::string::npos);
    }
  }
  SECTION("within the limit") {
    auto f = CancellableIsolate::run([] {
      std::vector<char> small(1u << 20, 'x');
      return small.size();
    }, CancellationToken::none(), options);
    CHECK(f.get() == 1u << 20);
  }
}

TEST_CASE("a CPU time limit fails a runaway loop with CpuTimeLimitExceeded", "[isolate][limits]") {
  IsolateOptions options;
  options.cpu_time_limit = 1s;
  auto f = CancellableIsolate::run([] {
    burn_cpu_forever();
    return 0;
  }, CancellationToken::none(), options);
  REQUIRE(f.wait_for(30s) == std::future_status::ready);
  try {
    (void)f.get();
    FAIL("expected CpuTimeLimitExceeded");
  } catch (const CpuTimeLimitExceeded& e) {
    CHECK(e.limit() == 1s);
  }
}

TEST_CASE("cancel racing completion yields exactly one outcome every time", "[isolate][cancel]") {
  std::mt19937 random(12345);
  for (int i = 0; i < 300; ++i) {
    CancellationToken token;
    auto isolate = CancellableIsolate::spawn([i] { return i; }, token);
    spin_for(std::chrono::microseconds(random() % 400));
    const bool cancelled = token.cancel();
    REQUIRE(isolate.future().wait_for(test_support::kDeadline) == std::future_status::ready);
    REQUIRE(cancelled);
    if (auto error = isolate.future().state()->error()) {
      REQUIRE(error == token.exception());
    } else {
      REQUIRE(isolate.future().get() == i);
    }
    REQUIRE(isolate.exited().wait_for(test_support::kDeadline) == std::future_status::ready);
  }
}

TEST_CASE("ten thousand runs with random cancellation leave no zombies, fds, mappings, shared memory or heap growth",
          "[isolate][leaks]") {
  auto batch = [](int runs, std::mt19937& random) {
    std::vector<Future<ProcessExit>> exits;
    for (int i = 0; i < runs; ++i) {
      CancellationToken token;
      const int work_us = static_cast<int>(random() % 300);
      IsolateOptions options;
#if defined(__SANITIZE_ADDRESS__)
      // GCC 12's AddressSanitizer allocator is not fork-safe: a child forked
      // while another thread holds its lock waits for ever on its first
      // allocation. The timeout kills such a child; the leak counts below
      // still have to come out exact.
      options.timeout = 10s;
#endif
      auto isolate = CancellableIsolate::spawn([work_us] {
        spin_for(std::chrono::microseconds(work_us));
        return std::string(static_cast<std::size_t>(work_us) * 100, 'r');  // some results outgrow the inline area
      }, token, options);
      if (random() % 2) {
        spin_for(std::chrono::microseconds(random() % 300));
        token.cancel();
      }
      exits.push_back(isolate.exited());
    }
    return process_support::wait_all(exits);
  };
  std::mt19937 random(2024);
  REQUIRE(batch(100, random));  // warm up: threads, allocator arenas, pools
  const int fds = process_support::count_fds();
  const int mappings = process_support::count_mappings();
  const auto heap = process_support::heap_in_use();
#if defined(__SANITIZE_ADDRESS__)
  // (3,000 under AddressSanitizer, whose leak checker also sees every run;
  // 10,000 there take four minutes of the CI's half hour.)
  REQUIRE(batch(3'000, random));
#else
  REQUIRE(batch(10'000, random));
#endif
  CHECK(process_support::count_children() == 0);
  // Flat memory: caches settle 25-30 KiB above the warm-up's level; one
  // leaked allocation per run (at least 32 bytes of heap) would add 312 KiB.
  if (heap) CHECK(*process_support::heap_in_use() <= *heap + 96 * 1024);
  CHECK(process_support::count_fds() == fds);
  // A few new mappings are allocator noise (AddressSanitizer's allocator maps
  // a region per size class as it first needs one); a leak of one per run
  // would add 10,000.
  CHECK(process_support::count_mappings() <= mappings + 16);
  CHECK(process_support::count_result_shm() == 0);
}

TEST_CASE("a thread blocked in exited() reaps its worker and leaves nothing behind",
          "[isolate][leaks]") {
  // exited().wait() reaps the worker on the waiting thread (no hop through
  // the reaper thread); the reaper may get the same exit event at the same
  // moment. Whichever way each run goes, every outcome must be right and
  // nothing may leak.
  auto runs = [](int count, std::mt19937& random) {
    int wrong = 0;
    for (int i = 0; i < count; ++i) {
      CancellationToken token;
      const int work_us = static_cast<int>(random() % 200);
      const bool big = random() % 2;  // beyond the inline area: a named shm object
      auto isolate = CancellableIsolate::spawn([work_us, big] {
        spin_for(std::chrono::microseconds(work_us));
        return std::string(big ? 100'000 : 10, 'r');
      }, token);
      std::thread canceller;
      if (random() % 2) {
        const auto delay = std::chrono::microseconds(random() % 200);
        canceller = std::thread([token, delay]() mutable {
          spin_for(delay);
          token.cancel();
        });
      }
      const auto exited = isolate.exited();
      exited.wait();  // unbounded: this thread reaps
      if (canceller.joinable()) canceller.join();
      // exited() completes only after the future has its outcome.
      if (!isolate.future().is_ready()) ++wrong;
      if (auto error = isolate.future().state()->error()) {
        if (error != token.exception()) ++wrong;
      } else if (isolate.future().get().size() != (big ? 100'000u : 10u)) {
        ++wrong;
      }
      const ProcessExit exit = exited.get();
      if (!(exit == ProcessExit{ProcessExit::Kind::exited, 0, 0}) && exit.signal != SIGKILL) ++wrong;
    }
    return wrong;
  };
  std::mt19937 random(77);
  REQUIRE(runs(50, random) == 0);  // warm up
  const int fds = process_support::count_fds();
  const int mappings = process_support::count_mappings();
  CHECK(runs(500, random) == 0);
  CHECK(process_support::count_children() == 0);
  CHECK(process_support::count_fds() == fds);
  CHECK(process_support::count_mappings() <= mappings + 16);  // noise; a leak would add 500
  CHECK(process_support::count_result_shm() == 0);
}

TEST_CASE("cancelling wakes a thread blocked in get() and the reaper still reaps the worker",
          "[isolate][cancel]") {
  // get() waits for the worker itself (it would reap it on exit); a
  // cancellation must end that wait at once and hand the worker back to the
  // reaper, which then reaps it with nobody waiting in exited().
  std::mt19937 random(99);
  int wrong = 0;
  std::vector<Future<ProcessExit>> exits;
  for (int i = 0; i < 300; ++i) {
    CancellationToken token;
    const int work_us = static_cast<int>(random() % 300);
    auto isolate = CancellableIsolate::spawn([work_us] {
      spin_for(std::chrono::microseconds(work_us));
      return work_us;
    }, token);
    const auto delay = std::chrono::microseconds(random() % 300);
    std::thread canceller([token, delay]() mutable {
      spin_for(delay);
      token.cancel();
    });
    try {
      if (isolate.future().get() != work_us) ++wrong;  // completed first
    } catch (const CancelledException&) {
      if (isolate.future().state()->error() != token.exception()) ++wrong;
    }
    canceller.join();
    exits.push_back(isolate.exited());
  }
  CHECK(wrong == 0);
  REQUIRE(process_support::wait_all(exits));
  CHECK(process_support::count_children() == 0);
}

TEST_CASE("two threads waiting for exited() both wake once the worker is reaped", "[isolate][cancel]") {
  for (int i = 0; i < 50; ++i) {
    CancellationToken token;
    auto isolate = CancellableIsolate::spawn([] { spin_forever(); }, token);
    const auto exited = isolate.exited();
    std::atomic<bool> other_woke{false};
    std::thread other([exited, &other_woke] {
      exited.wait();
      other_woke = true;
    });
    std::thread canceller([token]() mutable { token.cancel(); });
    exited.wait();
    other.join();
    canceller.join();
    REQUIRE(other_woke);
    REQUIRE(exited.get().signal == SIGKILL);
  }
  CHECK(process_support::count_children() == 0);
}

TEST_CASE("if the parent is killed, its isolate children die too", "[isolate][parent-death]") {
  int out[2];
  REQUIRE(::pipe(out) == 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  pid_t helper = 0;
  char path[] = CANCELLABLE_ISOLATE_PARENT_HELPER;
  char* argv[] = {path, nullptr};
  REQUIRE(::posix_spawn(&helper, path, &actions, nullptr, argv, environ) == 0);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  std::string line;
  char c;
  while (::read(out[0], &c, 1) == 1 && c != '\n') line += c;
  ::close(out[0]);
  const pid_t isolate_child = static_cast<pid_t>(std::stol(line));
  REQUIRE(isolate_child > 0);
  CHECK_FALSE(process_support::wait_gone(isolate_child, 0ms));  // running while the parent lives
  ::kill(helper, SIGKILL);
  ::waitpid(helper, nullptr, 0);
  CHECK(process_support::wait_gone(isolate_child));
}
