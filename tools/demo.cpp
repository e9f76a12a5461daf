// cancellable demo: what the library does, in one command with no files.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>

#include "cancellable/cancellable.hpp"
#include "cancellable/json.hpp"
#include "cancellable/json_generator.hpp"
#include "tools/cli.hpp"

namespace cancellable::cli {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}
double us_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}

std::size_t count_users(simdjson::dom::element root) { return simdjson::dom::array(root).size(); }

long runaway() {
  volatile long steps = 0;
  for (;;) steps = steps + 1;
}

}  // namespace

int run_demo() {
  std::cout << "cancellable demo: everything below runs in worker processes that are killed on "
               "cancellation.\n\n";

  // 1. A parse offloaded to a worker.
  {
    const std::string json = generate_json(20'000'000);
    const auto start = Clock::now();
    const auto users = parse_json(json, count_users).get();
    std::cout << "1. Parsed " << json.size() / 1'000'000 << " MB of generated JSON in a worker: "
              << users << " records, " << ms_since(start) << " ms.\n";
  }

  // 2. A runaway computation under a 100 ms deadline.
  {
    TimeoutCancellationToken deadline(100ms);
    const auto start = Clock::now();
    auto isolate = CancellableIsolate::spawn(runaway, deadline);
    try {
      (void)isolate.future().get();
    } catch (const TimeoutException&) {
      const double seen = ms_since(start);
      const auto exit = isolate.exited().get();
      std::cout << "2. A runaway loop under a 100 ms TimeoutCancellationToken: the caller had "
                   "TimeoutException after "
                << seen << " ms; the worker ended (" << exit.str() << ") and was reaped after "
                << ms_since(start) << " ms.\n";
    }
  }

  // 3. A large parse abandoned mid-way.
  {
    std::cout << "3. Generating 300 MB of JSON..." << std::flush;
    const std::string json = generate_json(300'000'000);
    std::cout << " done.\n";
    CancellationToken user;
    auto isolate = CancellableIsolate::spawn(
        [&json] {
          simdjson::dom::parser parser;
          report_progress(0, 1, "parsing");
          return simdjson::dom::array(parser.parse(json)).size();
        },
        user);
    while (!isolate.progress()) std::this_thread::yield();
    std::this_thread::sleep_for(10ms);  // let it get well into the parse
    const auto cancel_at = Clock::now();
    user.cancel_with_reason("user navigated away");
    Clock::time_point failed_at;
    try {
      (void)isolate.future().get();
    } catch (const CancelledException&) {
      failed_at = Clock::now();
    }
    isolate.exited().wait();
    const auto reaped_at = Clock::now();
    std::cout << "   Cancelled 10 ms into parsing " << json.size() / 1'000'000
              << " MB: the caller had CancelledException after " << us_between(cancel_at, failed_at)
              << " us; the worker was killed and reaped after " << us_between(cancel_at, reaped_at)
              << " us.\n";
    const auto start = Clock::now();
    simdjson::dom::parser parser;
    const auto users = simdjson::dom::array(parser.parse(json)).size();
    std::cout << "   The same parse in this thread took " << ms_since(start) << " ms ("
              << users << " records) and could not have been stopped.\n";
  }
  std::cout << "\nMeasured latencies vary with the machine; `cancellable bench` measures them "
               "with percentiles.\n";
  return kExitOk;
}

}  // namespace cancellable::cli
