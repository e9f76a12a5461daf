// Measuring helpers shared by the benchmark scenarios.
#pragma once

#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <future>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench/scenarios.hpp"
#include "cancellable/cancellable_base.hpp"
#include "cancellable/exceptions.hpp"

namespace cancellable::bench {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// 1 GiB of touched memory, held while alive (a big parent).
struct Ballast {
  Ballast() : bytes(std::size_t{1} << 30) {
    memory = static_cast<char*>(::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (memory == MAP_FAILED) throw std::runtime_error("mmap of 1 GiB failed");
    std::memset(memory, 1, bytes);
  }
  ~Ballast() { ::munmap(memory, bytes); }
  Ballast(const Ballast&) = delete;
  Ballast& operator=(const Ballast&) = delete;
  std::size_t bytes;
  char* memory;
};

// Where the benchmarks' callbacks count, so that nothing is optimised away.
inline std::atomic<std::uint64_t> sink{0};

// A cancellable that only counts its notification: the cost of the token's
// bookkeeping alone.
class Noop final : public Cancellable {
 public:
  ~Noop() override { detach(); }

 private:
  void on_cancel(std::exception_ptr) override { sink.fetch_add(1, std::memory_order_relaxed); }
};

inline double us_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::micro>(to - from).count();
}

// Keeps the waiting thread asleep in the kernel before the event fires, as a
// real waiter would be, without sleeping (a sleep's own lateness would add).
inline void spin_for(std::chrono::nanoseconds duration) {
  const auto until = Clock::now() + duration;
  while (Clock::now() < until) {
  }
}

inline Row make_row(std::string bench, std::string backend, std::vector<double> samples) {
  Row row;
  row.bench = std::move(bench);
  row.backend = std::move(backend);
  row.samples_us = std::move(samples);
  return row;
}

inline void compare(Row& row, const Row& baseline) {
  row.baseline = baseline.backend;
  const Summary base = summarize(baseline.samples_us);
  const Summary mine = summarize(row.samples_us);
  if (base.p50 > 0) row.ratio_p50 = mine.p50 / base.p50;
  if (base.p99 > 0) row.ratio_p99 = mine.p99 / base.p99;
}

// The goal of a wake-up: p99 <= factor x the baseline's p99, both measured
// in this run.
inline void set_p99_ratio_goal(Row& row, const Row& baseline, double factor) {
  compare(row, baseline);
  const double limit = factor * summarize(baseline.samples_us).p99;
  // With fewer than 100 samples the nearest-rank p99 is the maximum: say so.
  const char* mine = row.samples_us.size() >= 100 ? "p99" : "max";
  const char* theirs = baseline.samples_us.size() >= 100 ? "p99" : "max";
  std::ostringstream text;
  text.setf(std::ios::fixed);
  text.precision(2);
  text << mine << " <= " << factor << "x " << baseline.backend << " " << theirs << " (";
  text.precision(1);
  text << limit << " us)";
  row.goal = Goal{text.str(), summarize(row.samples_us).p99 <= limit};
}

inline void set_p99_goal(Row& row, double limit_us) {
  std::ostringstream text;
  text << "p99 <= " << limit_us << " us";
  row.goal = Goal{text.str(), summarize(row.samples_us).p99 <= limit_us};
}

// One long-lived waiter thread, as a real caller blocked in get() would be.
// For each sample it blocks in wait() while this thread fires; the result is
// the microseconds from the fire to the waiter being awake again.
class Waiter {
 public:
  Waiter() : thread_([this] { loop(); }) {}
  ~Waiter() {
    stop_.store(true);
    phase_.store(kArmed);
    phase_.notify_one();
    thread_.join();
  }

  double measure(const std::function<void()>& wait, const std::function<void()>& fire) {
    wait_ = &wait;
    phase_.store(kArmed, std::memory_order_release);
    phase_.notify_one();
    while (phase_.load(std::memory_order_acquire) != kWaiting) {
    }
    spin_for(200us);  // let the waiter fall asleep in the kernel
    const auto fired = Clock::now();
    fire();
    // Block (not spin): on a 2-core machine a spinning firer would keep the
    // waiter off a core.
    for (int phase; (phase = phase_.load(std::memory_order_acquire)) != kIdle;) {
      phase_.wait(phase, std::memory_order_acquire);
    }
    return us_between(fired, woke_);
  }

 private:
  enum : int { kIdle, kArmed, kWaiting };

  void loop() {
    for (;;) {
      phase_.wait(kIdle, std::memory_order_acquire);  // asleep between samples
      if (stop_.load()) return;
      if (phase_.load(std::memory_order_acquire) != kArmed) continue;
      phase_.store(kWaiting, std::memory_order_release);
      (*wait_)();
      woke_ = Clock::now();
      phase_.store(kIdle, std::memory_order_release);
      phase_.notify_one();
    }
  }

  std::atomic<int> phase_{kIdle};
  std::atomic<bool> stop_{false};
  const std::function<void()>* wait_ = nullptr;
  Clock::time_point woke_;
  std::thread thread_;
};

// One wake-up of the waiter blocked in future.get() (a std::future or a
// cancellable Future) that fire() fails with CancelledException.
template <class Future, class Fire>
double wakeup_of(Waiter& waiter, Future& future, Fire fire) {
  return waiter.measure(
      [&] {
        try {
          (void)future.get();
        } catch (const CancelledException&) {
        }
      },
      fire);
}

// One wake-up of a thread blocked on a std::promise's future, failed with
// CancelledException: what the kernel's futex wake-up and the scheduler cost
// with no library in between. The baseline of every wake-up goal; measured
// between a scenario's own samples.
inline double promise_wakeup(Waiter& waiter) {
  std::promise<int> promise;
  auto future = promise.get_future();
  return wakeup_of(waiter, future,
                   [&] { promise.set_exception(std::make_exception_ptr(CancelledException())); });
}

// A flag in memory shared with forked children.
struct SharedFlag {
  SharedFlag()
      : flag(static_cast<std::atomic<int>*>(::mmap(nullptr, 4096, PROT_READ | PROT_WRITE,
                                                   MAP_SHARED | MAP_ANONYMOUS, -1, 0))) {}
  ~SharedFlag() { ::munmap(flag, 4096); }
  std::atomic<int>* flag;
};

// One raw sample of a cancel that wakes a waiter and kills a worker process,
// without the library: a std::promise's waiter woken by set_exception, and a
// spinning forked child SIGKILLed right after (isolate_scenarios.cpp). The
// floor of a cancel -> exception with a worker process, fork or pool.
double raw_promise_kill_once(Waiter& waiter, SharedFlag& running);

}  // namespace cancellable::bench
