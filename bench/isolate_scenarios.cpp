// Isolate scenarios: what cancelling and running work in a worker costs,
// next to the physical floor measured by the same program in the same run
// (a bare fork, SIGKILL and waitpid).
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <future>
#include <stop_token>

#include "bench/measure.hpp"
#include "bench/scenarios.hpp"
#include "cancellable/cancellable.hpp"

namespace cancellable::bench {

namespace {

std::size_t samples_for(const Settings& settings) { return settings.quick ? 100 : 1000; }

// The work of the cancellation scenarios: says it runs, then spins until
// killed (process) or asked to stop (thread).
int spin_until_stopped(std::stop_token stop) {
  cancellable::report_progress(1, 1, "running");
  while (!stop.stop_requested()) {
  }
  return 0;
}

IsolateOptions on(Backend backend) {
  IsolateOptions options;
  options.backend = backend;
  return options;
}

// Starts a spinning isolate and returns once it runs.
Isolate<int> start_spinning(const CancellationToken& token, Backend backend) {
  auto isolate = CancellableIsolate::spawn(spin_until_stopped, token, on(backend));
  while (!isolate.progress()) {
  }
  return isolate;
}

const char* name_of(Backend backend) { return backend == Backend::process ? "fork" : "thread"; }

// Forks a child that spins until killed; returns once it runs.
pid_t fork_spinning_child(SharedFlag& running) {
  running.flag->store(0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    running.flag->store(1);
    for (;;) {
    }
  }
  while (running.flag->load() == 0) {
  }
  return pid;
}

// One raw sample: SIGKILL + waitpid of a spinning forked child.
double raw_kill_reap_once(SharedFlag& running) {
  const pid_t pid = fork_spinning_child(running);
  const auto start = Clock::now();
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return us_between(start, Clock::now());
}

// One sample of cancel() until exited() is complete.
double cancel_to_reaped_once(Backend backend) {
  CancellationToken token;
  auto isolate = start_spinning(token, backend);
  const auto exited = isolate.exited();
  const auto start = Clock::now();
  token.cancel();
  exited.wait();  // blocked, as the raw baseline is in waitpid()
  return us_between(start, Clock::now());
}

double raw_fork_roundtrip_once() {
  const auto start = Clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  ::waitpid(pid, nullptr, 0);
  return us_between(start, Clock::now());
}

double empty_roundtrip_once(Backend backend) {
  const auto start = Clock::now();
  auto isolate = CancellableIsolate::spawn([] {}, CancellationToken::none(), on(backend));
  isolate.future().get();
  const double us = us_between(start, Clock::now());
  isolate.exited().wait();
  return us;
}

// Runs the measurements of one scenario in turn, sample by sample, rotating
// their order: on a noisy machine a drift (another tenant, frequency) then
// hits the baseline and the measured rows alike, which back-to-back blocks
// of samples would not guarantee.
std::vector<std::vector<double>> interleaved(std::size_t samples,
                                             const std::vector<std::function<double()>>& measures) {
  std::vector<std::vector<double>> out(measures.size());
  for (std::size_t i = 0; i < samples; ++i) {
    for (std::size_t k = 0; k < measures.size(); ++k) {
      const std::size_t j = (i + k) % measures.size();
      out[j].push_back(measures[j]());
    }
  }
  return out;
}

}  // namespace

// One raw sample of what the fork row does, without the library: a thread
// blocked on a std::promise's future, woken by set_exception, and a spinning
// forked child SIGKILLed right after (the library fails the future, then
// kills the worker). The floor of a cancel -> exception with a worker process.
double raw_promise_kill_once(Waiter& waiter, SharedFlag& running) {
  const pid_t pid = fork_spinning_child(running);
  std::promise<int> promise;
  auto future = promise.get_future();
  const double us = wakeup_of(waiter, future, [&] {
    promise.set_exception(std::make_exception_ptr(CancelledException()));
    ::kill(pid, SIGKILL);
  });
  ::waitpid(pid, nullptr, 0);
  return us;
}

std::vector<Row> cancel_to_exception(const Settings& settings) {
  Waiter waiter;
  SharedFlag running;
  std::vector<double> promise;
  std::vector<double> raw;
  std::vector<double> by_backend[2];
  for (std::size_t i = 0; i < samples_for(settings); ++i) {
    for (const Backend backend : {Backend::process, Backend::thread}) {
      CancellationToken token;
      auto isolate = start_spinning(token, backend);
      const auto future = isolate.future();
      by_backend[backend == Backend::thread].push_back(wakeup_of(waiter, future, [&] { token.cancel(); }));
      isolate.exited().wait();  // no overlap between samples
      // The baseline, between the samples. (Not while the worker spins: the
      // cancel kills the worker as it wakes the waiter, and a promise's
      // waiter would have to preempt a worker that nothing kills.)
      promise.push_back(promise_wakeup(waiter));
    }
    raw.push_back(raw_promise_kill_once(waiter, running));
  }
  auto baseline = make_row("cancel_to_exception", "std_promise", std::move(promise));
  auto floor = make_row("cancel_to_exception", "raw_promise_kill", std::move(raw));
  compare(floor, baseline);
  std::vector<Row> rows;
  for (const Backend backend : {Backend::process, Backend::thread}) {
    auto row = make_row("cancel_to_exception", name_of(backend), std::move(by_backend[backend == Backend::thread]));
    set_p99_ratio_goal(row, baseline, 1.25);
    rows.push_back(std::move(row));
  }
  rows.insert(rows.begin(), std::move(floor));
  rows.insert(rows.begin(), std::move(baseline));
  return rows;
}

std::vector<Row> cancel_to_reaped(const Settings& settings) {
  SharedFlag running;
  auto samples = interleaved(samples_for(settings),
                             {[&] { return raw_kill_reap_once(running); },
                              [] { return cancel_to_reaped_once(Backend::process); },
                              [] { return cancel_to_reaped_once(Backend::thread); }});
  return {make_row("raw_kill_reap", "raw", std::move(samples[0])),
          make_row("cancel_to_reaped", "fork", std::move(samples[1])),
          make_row("cancel_to_reaped", "thread", std::move(samples[2]))};
}

std::vector<Row> empty_roundtrip(const Settings& settings) {
  auto samples = interleaved(samples_for(settings), {raw_fork_roundtrip_once,
                                                     [] { return empty_roundtrip_once(Backend::process); },
                                                     [] { return empty_roundtrip_once(Backend::thread); }});
  return {make_row("raw_fork_roundtrip", "raw", std::move(samples[0])),
          make_row("empty_roundtrip", "fork", std::move(samples[1])),
          make_row("empty_roundtrip", "thread", std::move(samples[2]))};
}

}  // namespace cancellable::bench
