// JSON scenarios: parsing a generated 100 MB file in this thread, in an
// isolate with a small result, and in an isolate with the whole document
// back; and cancelling a parse 10 ms in, next to a raw SIGKILL + reap of a
// forked child doing the same parse. Generated files live in a temporary
// directory that is removed afterwards.
#include <fcntl.h>
#include <signal.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <system_error>
#include <thread>

#include "bench/measure.hpp"
#include "bench/scenarios.hpp"
#include "cancellable/builtin_tasks.hpp"
#include "cancellable/json_tasks.hpp"
#include "cancellable/cancellable.hpp"
#include "cancellable/json.hpp"
#include "cancellable/json_document.hpp"
#include "cancellable/json_generator.hpp"
#include "cancellable/pool.hpp"
#include "tests/support/process_support.hpp"

namespace cancellable::bench {

namespace {

// A temporary directory with one generated JSON file, removed on destruction.
class GeneratedFile {
 public:
  explicit GeneratedFile(std::size_t bytes) {
    dir_ = std::filesystem::temp_directory_path() /
           ("cancellable-bench-" + std::to_string(::getpid()) + "-" + std::to_string(bytes));
    std::filesystem::create_directories(dir_);
    path_ = dir_ / "generated.json";
    std::ofstream(path_, std::ios::binary) << generate_json(bytes, 42);
  }
  ~GeneratedFile() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path dir_;
  std::filesystem::path path_;
};

std::size_t top_level_size(simdjson::dom::element root) { return simdjson::dom::array(root).size(); }

// The work of parse_json_file(path, top_level_size) inside its worker;
// parsing_starts() runs once the file is read; arena is the one
// parse_json_file would give its worker.
std::size_t parse_in_worker(const std::filesystem::path& path, detail::JsonArena* arena,
                            const std::function<void()>& parsing_starts) {
  return top_level_size(detail::parse_json_file_in_worker(path, JsonOptions{}, arena, false, parsing_starts).root());
}

// The in-thread baseline, run in a helper process that never forks. In this
// process every isolate's fork would make a reused parser's warm buffers
// copy-on-write, and the next in-thread parse would take a page fault per
// page: a slower baseline than an in-thread program really has.
class InThreadParser {
 public:
  explicit InThreadParser(const std::filesystem::path& path) {
    int requests[2];
    int replies[2];
    if (::pipe2(requests, O_CLOEXEC) != 0 || ::pipe2(replies, O_CLOEXEC) != 0) {
      throw std::system_error(errno, std::generic_category(), "pipe2");
    }
    pid_ = ::fork();
    if (pid_ < 0) throw std::system_error(errno, std::generic_category(), "fork");
    if (pid_ == 0) {
      ::close(requests[1]);
      ::close(replies[0]);
      serve(path, requests[0], replies[1]);
      ::_exit(0);
    }
    ::close(requests[0]);
    ::close(replies[1]);
    request_ = requests[1];
    reply_ = replies[0];
  }
  ~InThreadParser() {
    ::close(request_);  // the helper sees end of file and exits
    ::close(reply_);
    ::waitpid(pid_, nullptr, 0);
  }
  InThreadParser(const InThreadParser&) = delete;
  InThreadParser& operator=(const InThreadParser&) = delete;

  pid_t pid() const { return pid_; }

  struct Parse {
    double us = 0;  // parser.load() and the summary, measured in the helper
    std::size_t result = 0;
  };
  // cold: with a fresh dom::parser, as a one-shot program parses (its
  // buffers freshly allocated, their pages faulted in by this parse).
  Parse parse(bool cold = false) {
    const char go = cold ? 2 : 1;
    Parse out;
    if (::write(request_, &go, 1) != 1 || ::read(reply_, &out, sizeof out) != sizeof out) {
      throw std::runtime_error("json_parse_100mb: the in-thread helper died");
    }
    return out;
  }

 private:
  static void serve(const std::filesystem::path& path, int requests, int replies) {
    simdjson::dom::parser parser;  // reused, as the fastest in-thread practice
    char go = 0;
    while (::read(requests, &go, 1) == 1) {
      Parse out;
      const auto start = Clock::now();
      simdjson::dom::element root;
      if (go == 2) {
        simdjson::dom::parser fresh;
        if (!fresh.load(path.string()).get(root)) out.result = top_level_size(root);
      } else if (!parser.load(path.string()).get(root)) {
        out.result = top_level_size(root);
      }
      out.us = us_between(start, Clock::now());
      if (::write(replies, &out, sizeof out) != sizeof out) return;
    }
  }

  pid_t pid_ = -1;
  int request_ = -1;
  int reply_ = -1;
};

// A JSON result arrives before its worker's exit: wait until the last worker
// is reaped, so that its teardown does not overlap the next measurement.
// (except: the in-thread helper and the pool's worker, which stay.)
void wait_for_workers_gone(const std::vector<pid_t>& except) {
  using namespace std::chrono_literals;
  while (process_support::count_children_except(except) > 0) std::this_thread::sleep_for(200us);
}

// Available memory and disk, to skip the 1 GB case where it cannot run.
std::size_t available_memory_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  std::size_t kb = 0;
  std::string unit;
  while (meminfo >> key >> kb >> unit) {
    if (key == "MemAvailable:") return kb * 1024;
  }
  return 0;
}

std::size_t available_disk_bytes(const std::filesystem::path& dir) {
  struct statvfs fs {};
  if (::statvfs(dir.c_str(), &fs) != 0) return 0;
  return static_cast<std::size_t>(fs.f_bavail) * fs.f_frsize;
}


}  // namespace

std::vector<Row> json_parse_100mb(const Settings& settings) {
  // 20 samples: a p50 of 10 moved by 10% between runs on this noisy machine.
  const std::size_t runs = settings.quick ? 5 : 20;
  GeneratedFile file(100'000'000);
  InThreadParser in_thread(file.path());
  // One pool worker (cancellable-worker's parse_json_file: a parser reused
  // across tasks, as in a long-running program).
  PoolOptions pool_options;
  const char* worker = std::getenv("CANCELLABLE_WORKER_PROGRAM");
  pool_options.worker_program = worker ? worker : CANCELLABLE_BENCH_WORKER_PROGRAM;
  pool_options.standby = 0;
  WorkerPool pool(pool_options);
  const pid_t pool_worker = pool.run(builtin::pid).get();
  std::vector<double> pooled;
  std::vector<double> inthread;
  std::vector<double> summary;
  std::vector<double> document;
  std::vector<double> summary_cold;
  const auto check = [](std::size_t got, std::size_t expected) {
    if (got != expected) throw std::runtime_error("json_parse_100mb: results differ from in-thread");
  };
  // Every measurement starts once the last worker is reaped.
  const auto settle = [&] { wait_for_workers_gone({in_thread.pid(), pool_worker}); };
  for (std::size_t i = 0; i < runs + 1; ++i) {  // the first round warms up
    settle();
    const auto n = in_thread.parse();
    // The two isolate rows in turns, so that neither always follows the other.
    const auto parse_summary = [&] {
      settle();
      const auto start = Clock::now();
      check(parse_json_file(file.path(), top_level_size).get(), n.result);
      if (i > 0) summary.push_back(us_between(start, Clock::now()));
    };
    const auto parse_document = [&] {
      settle();
      const auto start = Clock::now();
      auto doc = parse_json_document_file(file.path());
      check(top_level_size(doc.get().root()), n.result);
      if (i > 0) document.push_back(us_between(start, Clock::now()));
    };  // the document is gone, its arena idle again
    if (i % 2 == 0) {
      parse_summary();
      parse_document();
    } else {
      parse_document();
      parse_summary();
    }
    {
      settle();
      const auto start = Clock::now();
      check(pool.run(builtin::parse_json_file, file.path().string()).get().top_level_elements, n.result);
      if (i > 0) pooled.push_back(us_between(start, Clock::now()));
    }
    if (i > 0) inthread.push_back(n.us);
  }
  // After the rest: a first parse into a fresh arena, as a one-shot parse
  // (`cancellable parse`) is (freeing the warm arena's memory first),
  // interleaved with its baseline, an in-thread parse with a fresh parser.
  std::vector<double> inthread_cold;
  for (std::size_t i = 0; i < (settings.quick ? 5 : 10); ++i) {
    settle();
    const auto cold = in_thread.parse(true);
    inthread_cold.push_back(cold.us);
    settle();
    release_json_arena();
    const auto start = Clock::now();
    check(parse_json_file(file.path(), top_level_size).get(), cold.result);
    summary_cold.push_back(us_between(start, Clock::now()));
  }
  auto base = make_row("json_parse_100mb", "inthread", std::move(inthread));
  auto small = make_row("json_parse_100mb", "isolate_summary", std::move(summary));
  auto whole = make_row("json_parse_100mb", "isolate_document", std::move(document));
  auto base_cold = make_row("json_parse_100mb", "inthread_cold", std::move(inthread_cold));
  auto small_cold = make_row("json_parse_100mb", "isolate_summary_cold", std::move(summary_cold));
  auto pool_row = make_row("json_parse_100mb", "pool_summary", std::move(pooled));
  compare(pool_row, base);
  pool_row.goal = Goal{"p50 <= 1.05x inthread", *pool_row.ratio_p50 <= 1.05};
  compare(small, base);
  compare(whole, base);
  compare(small_cold, base_cold);
  small_cold.goal = Goal{"p50 <= 1.15x inthread_cold", *small_cold.ratio_p50 <= 1.15};
  small.goal = Goal{"p50 <= 1.05x inthread", *small.ratio_p50 <= 1.05};
  whole.goal = Goal{"p50 <= 1.15x inthread", *whole.ratio_p50 <= 1.15};
  return {std::move(base),      std::move(small),      std::move(whole),
          std::move(pool_row),  std::move(base_cold), std::move(small_cold)};
}

std::vector<Row> cancel_mid_parse(const Settings& settings) {
  std::vector<Row> rows;
  std::vector<std::size_t> sizes = {100'000'000};
  if (!settings.quick) {
    const auto tmp = std::filesystem::temp_directory_path();
    if (available_memory_bytes() > (std::size_t{12} << 30) && available_disk_bytes(tmp) > (std::size_t{3} << 30)) {
      sizes.push_back(1'000'000'000);
    } else {
      std::cerr << "cancel_mid_parse: skipping 1 GB (needs 12 GiB of available memory and 3 GiB of "
                   "free disk)\n";
    }
  }
  Waiter waiter;
  SharedFlag parsing;  // set by the raw baseline's child once its file is read
  for (const std::size_t bytes : sizes) {
    GeneratedFile file(bytes);
    // One warm arena for both, as parse_json_file's workers would have; used
    // by one worker at a time (each is reaped before the next starts).
    const auto arena = detail::arena_for(bytes);
    const bool gigabyte = bytes >= 1'000'000'000;
    const std::string suffix = gigabyte ? "_1gb" : "_100mb";
    // A p99 needs samples; a 1 GB sample takes about a second.
    const std::size_t samples = settings.quick ? 5 : gigabyte ? 20 : 100;
    std::vector<double> to_exception;
    std::vector<double> to_reaped;
    std::vector<double> raw;
    std::vector<double> promise;
    for (std::size_t i = 0; i < samples; ++i) {
      // The isolate: cancelled 10 ms into parsing.
      CancellationToken token;
      // What parse_json_file runs, with the handle kept to watch the worker.
      auto isolate = detail::spawn_isolate<std::size_t>(
          [path = file.path(), memory = arena.get()] {
            return parse_in_worker(path, memory, [] { report_progress(0, 2, "parsing"); });
          },
          token, {}, arena, true);
      while (!isolate.progress()) std::this_thread::yield();
      std::this_thread::sleep_for(10ms);
      const auto future = isolate.future();
      const auto exited = isolate.exited();
      Clock::time_point cancelled_at;
      to_exception.push_back(wakeup_of(waiter, future, [&] {
        cancelled_at = Clock::now();
        token.cancel();
      }));
      exited.wait();
      to_reaped.push_back(us_between(cancelled_at, Clock::now()));

      // The raw baseline: a forked child doing the same parse, killed 10 ms in.
      parsing.flag->store(0);
      const pid_t pid = ::fork();
      if (pid == 0) {
        (void)parse_in_worker(file.path(), arena.get(), [&] { parsing.flag->store(1); });
        ::_exit(0);
      }
      while (parsing.flag->load() == 0) std::this_thread::yield();
      std::this_thread::sleep_for(10ms);
      const auto start = Clock::now();
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      raw.push_back(us_between(start, Clock::now()));
      // The wake-up baseline, between the samples (see cancel_to_exception).
      promise.push_back(promise_wakeup(waiter));
    }
    auto base = make_row("cancel_mid_parse", "raw_kill_reap" + suffix, std::move(raw));
    auto wakeup = make_row("cancel_mid_parse", "std_promise" + suffix, std::move(promise));
    auto exception = make_row("cancel_mid_parse", "cancel_to_exception" + suffix, std::move(to_exception));
    auto reaped = make_row("cancel_mid_parse", "cancel_to_reaped" + suffix, std::move(to_reaped));
    set_p99_ratio_goal(exception, wakeup, 1.25);
    compare(reaped, base);
    reaped.goal = Goal{"p50 <= 1.5x raw_kill_reap", *reaped.ratio_p50 <= 1.5};
    rows.push_back(std::move(base));
    rows.push_back(std::move(wakeup));
    rows.push_back(std::move(exception));
    rows.push_back(std::move(reaped));
  }
  release_json_arena();  // gigabytes of warm pages: give them back
  return rows;
}

}  // namespace cancellable::bench
