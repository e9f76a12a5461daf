// cancellable parse FILE: parse a JSON file in an isolate, print a summary or
// the value at a JSON pointer.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>

#include "cancellable/cancellable.hpp"
#include "cancellable/json.hpp"
#include "tools/cli.hpp"

namespace cancellable::cli {

namespace {

using Clock = std::chrono::steady_clock;

struct Summary {
  std::uint64_t objects = 0, arrays = 0, strings = 0, numbers = 0, booleans = 0, nulls = 0;
  std::uint64_t max_depth = 0;
  std::int64_t parse_ns = 0;
  std::int64_t finished_at_ns = 0;  // steady clock (CLOCK_MONOTONIC), comparable across processes
  std::string pointer_value;
  bool has_pointer = false;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(objects, arrays, strings, numbers, booleans, nulls, max_depth, parse_ns, finished_at_ns,
            pointer_value, has_pointer);
  }
};

void count(simdjson::dom::element e, std::uint64_t depth, Summary& s) {
  s.max_depth = std::max(s.max_depth, depth);
  switch (e.type()) {
    case simdjson::dom::element_type::OBJECT:
      ++s.objects;
      for (auto field : e.get_object()) count(field.value, depth + 1, s);
      break;
    case simdjson::dom::element_type::ARRAY:
      ++s.arrays;
      for (auto item : e.get_array()) count(item, depth + 1, s);
      break;
    case simdjson::dom::element_type::STRING: ++s.strings; break;
    case simdjson::dom::element_type::BOOL: ++s.booleans; break;
    case simdjson::dom::element_type::NULL_VALUE: ++s.nulls; break;
    default: ++s.numbers; break;
  }
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

double ms(std::int64_t ns) { return static_cast<double>(ns) / 1e6; }

// The progress line on a terminal's stderr: the stage and the seconds since
// the start, rewritten in place; cleared once, after which reports that were
// still on their way (from the progress thread) print nothing.
class ProgressLine {
 public:
  explicit ProgressLine(Clock::time_point started) : started_(started) {}

  void show(const std::string& stage) {
    std::lock_guard lock(mutex_);
    if (cleared_) return;
    shown_ = true;
    const auto s = std::chrono::duration<double>(Clock::now() - started_).count();
    std::fprintf(stderr, "\r%-12s %6.1f s", stage.c_str(), s);
    std::fflush(stderr);
  }

  void clear() {
    std::lock_guard lock(mutex_);
    if (shown_ && !cleared_) std::fprintf(stderr, "\r%30s\r", "");
    cleared_ = true;
  }

 private:
  std::mutex mutex_;
  const Clock::time_point started_;
  bool shown_ = false;
  bool cleared_ = false;
};

}  // namespace

int run_parse(const ParseArgs& args) {
  CancellationToken interrupt;
  InterruptWatcher watcher(interrupt);

  std::error_code ec;
  const auto bytes = std::filesystem::file_size(args.file, ec);
  IsolateOptions options;
  options.backend = args.backend == "thread" ? Backend::thread : Backend::process;
  options.timeout = args.timeout;
  const bool show_progress = !ec && bytes > 100'000'000 && ::isatty(STDERR_FILENO);
  const auto started = Clock::now();
  auto indicator = std::make_shared<ProgressLine>(started);
  if (show_progress) {
    options.progress_interval = std::chrono::milliseconds(100);
    options.on_progress = [indicator](const Progress& p) { indicator->show(p.stage); };
    indicator->show("starting");  // at once, before the first report
  }
  const auto pointer = args.pointer;
  const auto started_ns = now_ns();
  try {
    Summary s;
    // The progress line goes before anything else is printed, result or error.
    try {
      s = parse_json_file(
              args.file,
              [pointer, started_ns](simdjson::dom::element root) {
                Summary summary;
                summary.parse_ns = now_ns() - started_ns;
                if (pointer) {
                  simdjson::dom::element value;
                  if (auto error = root.at_pointer(*pointer).get(value)) detail::throw_json_error(error);
                  summary.pointer_value = simdjson::to_string(value);
                  summary.has_pointer = true;
                } else {
                  count(root, 1, summary);
                }
                summary.finished_at_ns = now_ns();
                return summary;
              },
              interrupt, options)
              .get();
    } catch (...) {
      indicator->clear();
      throw;
    }
    const auto received = now_ns();
    indicator->clear();
    if (s.has_pointer) {
      std::cout << s.pointer_value << "\n";
      return kExitOk;
    }
    const auto total = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - started);
    std::cout << "file:     " << args.file << "\n"
              << "bytes:    " << bytes << "\n"
              << "objects:  " << s.objects << "\n"
              << "arrays:   " << s.arrays << "\n"
              << "strings:  " << s.strings << "\n"
              << "numbers:  " << s.numbers << "\n"
              << "booleans: " << s.booleans << "\n"
              << "nulls:    " << s.nulls << "\n"
              << "depth:    " << s.max_depth << "\n"
              << "backend:  " << args.backend << "\n"
              << "parse:    " << ms(s.parse_ns) << " ms (worker start, read and parse)\n"
              << "total:    " << ms(total.count()) << " ms (parse, summary and transfer)\n"
              << "transfer: " << ms(received - s.finished_at_ns) << " ms (worker done to result here)\n";
    return kExitOk;
  } catch (const CancelledException&) {
    std::cerr << "cancellable: parse interrupted; the worker was killed\n";
    return kExitInterrupted;
  } catch (const TimeoutException& e) {
    std::cerr << "cancellable: parse timed out after " << format_duration(e.timeout())
              << "; the worker was killed\n";
    return kExitTimeout;
  } catch (const std::exception& e) {
    std::cerr << "cancellable: " << e.what() << "\n";
    return kExitError;
  }
}

}  // namespace cancellable::cli
