// JSON scenarios: parsing a generated 100 MB file in this thread, in an
// isolate with a small result, and in an isolate with the whole document
// back; and cancelling a parse 10 ms in, next to a raw SIGKILL + reap of a
// forked child doing the same parse. Generated files live in a temporary
// directory that is removed afterwards.
#include <signal.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "bench/measure.hpp"
#include "bench/scenarios.hpp"
#include "cancellable/cancellable.hpp"
#include "cancellable/json.hpp"
#include "cancellable/json_document.hpp"
#include "cancellable/json_generator.hpp"

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
// parsing_starts() runs once the file is read.
template <class Started>
std::size_t parse_in_worker(const std::filesystem::path& path, Started parsing_starts,
                            const JsonOptions& options = {}) {
  return detail::with_parsed_file(path, options, nullptr,
                                  static_cast<std::size_t>(std::filesystem::file_size(path)), parsing_starts,
                                  top_level_size);
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
  const std::size_t runs = settings.quick ? 5 : 10;
  GeneratedFile file(100'000'000);
  std::vector<double> inthread;
  std::vector<double> summary;
  std::vector<double> document;
  std::vector<double> summary_huge;
  std::vector<double> scratch;
  const JsonOptions huge{.huge_pages = true};
  simdjson::dom::parser parser;  // reused, as the fastest in-thread practice
  for (std::size_t i = 0; i < runs + 1; ++i) {  // the first round warms up
    const auto a = Clock::now();
    simdjson::padded_string contents = simdjson::padded_string::load(file.path().string()).value();
    const std::size_t n = top_level_size(parser.parse(contents).value());
    const auto b = Clock::now();
    const std::size_t s = parse_json_file(file.path(), top_level_size).get();
    const auto c = Clock::now();
    auto doc = parse_json_document_file(file.path());
    const std::size_t d = top_level_size(doc.get().root());
    const auto e = Clock::now();
    // For reference: the same with JsonOptions::huge_pages, in an isolate and
    // in this thread (the worker's code without the process around it).
    const std::size_t sh =
        parse_json_file(file.path(), top_level_size, CancellationToken::none(), {}, huge).get();
    const auto f = Clock::now();
    const std::size_t h = parse_in_worker(file.path(), [] {}, huge);
    const auto g = Clock::now();
    if (s != n || d != n || sh != n || h != n) throw std::runtime_error("json_parse_100mb: results differ from in-thread");
    if (i == 0) continue;
    inthread.push_back(us_between(a, b));
    summary.push_back(us_between(b, c));
    document.push_back(us_between(c, e));
    summary_huge.push_back(us_between(e, f));
    scratch.push_back(us_between(f, g));
  }
  auto base = make_row("json_parse_100mb", "inthread", std::move(inthread));
  auto small = make_row("json_parse_100mb", "isolate_summary", std::move(summary));
  auto whole = make_row("json_parse_100mb", "isolate_document", std::move(document));
  auto small_huge = make_row("json_parse_100mb", "isolate_summary_hugepages", std::move(summary_huge));
  auto same_code = make_row("json_parse_100mb", "inthread_hugepages", std::move(scratch));
  compare(small, base);
  compare(whole, base);
  compare(small_huge, base);
  compare(same_code, base);
  small.goal = Goal{"p50 <= 1.05x inthread", *small.ratio_p50 <= 1.05};
  whole.goal = Goal{"p50 <= 1.15x inthread", *whole.ratio_p50 <= 1.15};
  return {std::move(base), std::move(small), std::move(whole), std::move(small_huge), std::move(same_code)};
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
    const bool gigabyte = bytes >= 1'000'000'000;
    const std::string suffix = gigabyte ? "_1gb" : "_100mb";
    // A p99 needs samples; a 1 GB sample takes about a second.
    const std::size_t samples = settings.quick ? 5 : gigabyte ? 20 : 100;
    std::vector<double> to_exception;
    std::vector<double> to_reaped;
    std::vector<double> raw;
    for (std::size_t i = 0; i < samples; ++i) {
      // The isolate: cancelled 10 ms into parsing.
      CancellationToken token;
      // What parse_json_file runs, with the handle kept to watch the worker.
      auto isolate = CancellableIsolate::spawn(
          [path = file.path()] { return parse_in_worker(path, [] { report_progress(0, 2, "parsing"); }); },
          token);
      while (!isolate.progress()) std::this_thread::yield();
      std::this_thread::sleep_for(10ms);
      const auto future = isolate.future();
      const auto exited = isolate.exited();
      Clock::time_point cancelled_at;
      to_exception.push_back(waiter.measure(
          [&] {
            try {
              (void)future.get();
            } catch (const CancelledException&) {
            }
          },
          [&] {
            cancelled_at = Clock::now();
            token.cancel();
          }));
      exited.wait();
      to_reaped.push_back(us_between(cancelled_at, Clock::now()));

      // The raw baseline: a forked child doing the same parse, killed 10 ms in.
      parsing.flag->store(0);
      const pid_t pid = ::fork();
      if (pid == 0) {
        (void)parse_in_worker(file.path(), [&] { parsing.flag->store(1); });
        ::_exit(0);
      }
      while (parsing.flag->load() == 0) std::this_thread::yield();
      std::this_thread::sleep_for(10ms);
      const auto start = Clock::now();
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      raw.push_back(us_between(start, Clock::now()));
    }
    auto base = make_row("cancel_mid_parse", "raw_kill_reap" + suffix, std::move(raw));
    auto exception = make_row("cancel_mid_parse", "cancel_to_exception" + suffix, std::move(to_exception));
    auto reaped = make_row("cancel_mid_parse", "cancel_to_reaped" + suffix, std::move(to_reaped));
    set_p99_goal(exception, 100);
    compare(reaped, base);
    reaped.goal = Goal{"p50 <= 1.5x raw_kill_reap", *reaped.ratio_p50 <= 1.5};
    rows.push_back(std::move(base));
    rows.push_back(std::move(exception));
    rows.push_back(std::move(reaped));
  }
  return rows;
}

}  // namespace cancellable::bench
