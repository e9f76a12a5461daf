// cancellable demo: what the library does, in one command with no files.
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <stop_token>
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

// Every time in ms: "0.071 ms", "236.3 ms".
std::string ms_text(double ms) {
  char text[48];
  std::snprintf(text, sizeof text, ms < 10 ? "%.3f ms" : "%.1f ms", ms);
  return text;
}
std::string ms_since(Clock::time_point t) {
  return ms_text(std::chrono::duration<double, std::milli>(Clock::now() - t).count());
}
std::string ms_between(Clock::time_point a, Clock::time_point b) {
  return ms_text(std::chrono::duration<double, std::milli>(b - a).count());
}

std::size_t count_users(simdjson::dom::element root) { return simdjson::dom::array(root).size(); }

long runaway() {
  volatile long steps = 0;
  for (;;) steps = steps + 1;
}

}  // namespace

int run_demo(const std::string& backend_name) {
  // The backend that runs: --backend, else CANCELLABLE_BACKEND, else process
  // (resolved by main).
  IsolateOptions on;
  const bool thread_backend = backend_name == "thread";
  on.backend = thread_backend ? Backend::thread : Backend::process;
  if (thread_backend) {
    on.backend = Backend::thread;
    std::cout << "cancellable demo, thread backend: the work runs on threads of this process. A "
                 "cancellation fails the caller's future at once, but a thread cannot be killed: "
                 "the work goes on until it returns by itself.\n\n";
  } else {
    std::cout << "cancellable demo, process backend: everything below runs in worker processes that "
                 "are killed on cancellation.\n\n";
  }

  // 1. A parse offloaded to a worker.
  {
    const std::string json = generate_json(20'000'000);
    const auto start = Clock::now();
    const auto users = parse_json(json, count_users, CancellationToken::none(), on).get();
    std::cout << "1. Parsed " << json.size() / 1'000'000 << " MB of generated JSON in a "
              << (thread_backend ? "thread" : "worker") << ": "
              << users << " records, " << ms_since(start) << ".\n";
  }

  // 2. A runaway computation under a 100 ms deadline.
  {
    TimeoutCancellationToken deadline(100ms);
    const auto start = Clock::now();
    auto isolate = CancellableIsolate::spawn(runaway, deadline, on);
    try {
      (void)isolate.future().get();
    } catch (const TimeoutException&) {
      const std::string seen = ms_since(start);
      if (thread_backend) {
        std::cout << "2. A runaway loop under a 100 ms TimeoutCancellationToken: the caller had "
                     "TimeoutException after "
                  << seen << ". The loop's thread cannot be killed: it spins on (one CPU) until "
                             "this demo exits; with the process backend its worker is killed.\n";
      }
    }
    if (!thread_backend) {
      const std::string seen = ms_since(start);
      const auto exit = isolate.exited().get();
      std::cout << "2. A runaway loop under a 100 ms TimeoutCancellationToken: the caller had "
                   "TimeoutException after "
                << seen << "; the worker ended (" << exit.str() << ") and was reaped after "
                << ms_since(start) << ".\n";
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
        user, on);
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
              << " MB: the caller had CancelledException after " << ms_between(cancel_at, failed_at) << "; "
              << (thread_backend ? "the parse thread could not be stopped and ended on its own after "
                                 : "the worker was killed and reaped after ")
              << ms_between(cancel_at, reaped_at) << ".\n";
    const auto start = Clock::now();
    simdjson::dom::parser parser;
    const auto users = simdjson::dom::array(parser.parse(json)).size();
    std::cout << "   The same parse in this thread took " << ms_since(start) << " ("
              << users << " records) and could not have been stopped.\n";
  }
  // 4. A graded stop next to a kill: work that removes its temporary file
  // when asked.
  {
    const std::string path = "/tmp/cancellable-demo-" + std::to_string(::getpid()) + ".partial";
    std::cout << "4. Work that writes " << path << " and removes it when asked to stop, cancelled:\n";
    for (const auto grace : {0ms, 5000ms}) {
      IsolateOptions options = on;
      options.stop.grace = grace;
      CancellationToken token;
      auto isolate = CancellableIsolate::spawn(
          [path](std::stop_token asked) {
            std::ofstream(path) << "half-written output\n";
            std::mutex mutex;
            std::condition_variable_any wake;
            std::unique_lock lock(mutex);
            wake.wait(lock, asked, [] { return false; });
            std::filesystem::remove(path);
            return 0;
          },
          token, options);
      while (!std::filesystem::exists(path)) std::this_thread::yield();
      const auto cancel_at = Clock::now();
      token.cancel();
      Clock::time_point failed_at;
      try {
        (void)isolate.future().get();
      } catch (const CancelledException&) {
        failed_at = Clock::now();
      }
      const ProcessExit exit = isolate.exited().get();
      const auto ended_at = Clock::now();
      const bool left = std::filesystem::exists(path);
      std::cout << "   " << (grace == 0ms ? "without a grace:  " : "with a 5 s grace: ")
                << "the caller had CancelledException after " << ms_between(cancel_at, failed_at)
                << "; the work ended after " << ms_between(cancel_at, ended_at) << " (" << to_string(exit.stop)
                << "); the file was " << (left ? "left behind" : "removed") << ".\n";
      std::filesystem::remove(path);
    }
  }
  std::cout << "\nMeasured latencies vary with the machine; `cancellable bench` measures them "
               "with percentiles.\n";
  if (thread_backend) {
    // The runaway loop's thread still spins: end the process without
    // destroying what it might use.
    std::fflush(stdout);
    ::_exit(kExitOk);
  }
  return kExitOk;
}

}  // namespace cancellable::cli
