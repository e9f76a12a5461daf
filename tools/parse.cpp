// cancellable parse FILE|-: parse JSON in an isolate, print a summary or the
// value at a JSON pointer, for a person (a terminal) or a script (--json).
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

#include "cancellable/cancellable.hpp"
#include "cancellable/json.hpp"
#include "cancellable/json_tasks.hpp"
#include "cancellable/pool.hpp"
#include "tools/cli.hpp"
#include "tools/json_pointer.hpp"
#include "tools/json_text.hpp"

namespace cancellable::cli {

namespace {

using Clock = std::chrono::steady_clock;

struct Summary {
  std::uint64_t bytes = 0;  // of JSON read
  std::uint64_t objects = 0, arrays = 0, strings = 0, numbers = 0, booleans = 0, nulls = 0;
  std::uint64_t max_depth = 0;
  std::int64_t parse_ns = 0;
  std::int64_t finished_at_ns = 0;  // steady clock (CLOCK_MONOTONIC), comparable across processes
  bool has_pointer = false;
  bool pointer_found = false;
  std::string pointer_value;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(bytes, objects, arrays, strings, numbers, booleans, nulls, max_depth, parse_ns, finished_at_ns,
            has_pointer, pointer_found, pointer_value);
  }
};

// The counts of a document into the summary.
void add_counts(const builtin::JsonCounts& c, Summary& s) {
  s.objects = c.objects;
  s.arrays = c.arrays;
  s.strings = c.strings;
  s.numbers = c.numbers;
  s.booleans = c.booleans;
  s.nulls = c.nulls;
  s.max_depth = c.depth;
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

double ms(std::int64_t ns) { return static_cast<double>(ns) / 1e6; }

// The progress line on a terminal's stderr: stage, bytes read so far (of
// how many, when known) and the rate since reading began while the input
// comes in, the input's size after that, and the seconds since the start. Redrawn
// in place every 100 ms by a thread of its own (so the time moves even while
// nothing is reported), and from the progress reports. Cleared once, before
// the result or the error; nothing is drawn after that.
class ProgressLine {
 public:
  static constexpr int kWidth = 64;

  ProgressLine(Clock::time_point started, std::optional<std::uint64_t> size) : started_(started), size_(size) {}
  ~ProgressLine() { clear(); }

  void start() {
    std::lock_guard lock(mutex_);
    draw_locked();
    ticker_ = std::thread([this] {
      std::unique_lock lock(mutex_);
      while (!cleared_) {
        ticked_.wait_for(lock, std::chrono::milliseconds(100));
        if (!cleared_) draw_locked();
      }
    });
  }

  // The work's report: its stage, and in "reading", the bytes read so far
  // (done) of total (0: unknown).
  void report(const Progress& p) {
    std::lock_guard lock(mutex_);
    stage_ = p.stage;
    if (p.stage == "reading") {
      if (!reading_since_) reading_since_ = Clock::now();
      read_ = p.done;
      if (p.total != 0) size_ = p.total;
    }
    draw_locked();
  }

  void clear() {
    {
      std::lock_guard lock(mutex_);
      if (shown_ && !cleared_) std::fprintf(stderr, "\r%*s\r", kWidth, "");
      std::fflush(stderr);
      cleared_ = true;
    }
    ticked_.notify_all();
    if (ticker_.joinable()) ticker_.join();
  }

 private:
  void draw_locked() {
    if (cleared_) return;
    shown_ = true;
    const auto s = std::chrono::duration<double>(Clock::now() - started_).count();
    std::string amount;
    if (stage_ == "reading" && read_ > 0) {
      amount = short_size(static_cast<double>(read_));
      if (size_) amount += " of " + short_size(static_cast<double>(*size_));
      const auto reading = std::chrono::duration<double>(Clock::now() - *reading_since_).count();
      if (reading > 0) amount += ", " + short_size(static_cast<double>(read_) / reading) + "/s";
    } else if (size_) {
      amount = short_size(static_cast<double>(*size_));
    }
    char line[kWidth + 1];
    std::snprintf(line, sizeof line, "%-12s %-36s %8.1f s", stage_.c_str(), amount.c_str(), s);
    std::fprintf(stderr, "\r%-*s", kWidth, line);
    std::fflush(stderr);
  }

  std::mutex mutex_;
  std::condition_variable ticked_;
  const Clock::time_point started_;
  std::optional<std::uint64_t> size_;
  std::uint64_t read_ = 0;
  std::optional<Clock::time_point> reading_since_;  // the first "reading" report
  std::string stage_ = "starting";
  bool shown_ = false;
  bool cleared_ = false;
  std::thread ticker_;
};

// Writes the thread backend's "interrupted" message with write(2) and exits,
// on the signal thread, as the token is cancelled: nothing here allocates
// or waits for another thread (the parse thread cannot be stopped, and
// what it holds is not waited for).
class ExitOnSignal final : public Cancellable {
 public:
  ExitOnSignal(const SignalCancellationToken& token, bool clear_progress_line) : token_(token) {
    const std::string clear = clear_progress_line ? "\r" + std::string(ProgressLine::kWidth, ' ') + "\r" : "";
    for (const int sig : {SIGINT, SIGTERM}) {
      messages_[sig == SIGINT ? 0 : 1] = clear + "cancellable: parse interrupted by SIG" + ::sigabbrev_np(sig) +
                                         "; the parse thread was abandoned (a thread cannot be killed; exiting)\n";
    }
    maybe_attach(token);
  }
  ~ExitOnSignal() override { detach(); }

 private:
  void on_cancel(std::exception_ptr) override {
    const int sig = token_.signal();
    if (sig != SIGINT && sig != SIGTERM) return;  // (not a signal: the main thread reports it)
    const std::string& message = messages_[sig == SIGINT ? 0 : 1];
    (void)!::write(STDERR_FILENO, message.data(), message.size());
    ::_exit(kExitSignalBase + sig);
  }

  const SignalCancellationToken& token_;  // (run_parse's, which outlives this)
  std::string messages_[2];
};

// Prints the summary (or the pointer's value) for a person or, with --json,
// a script. transfer_ms: nothing where it is not measured (a pool's worker
// does not say when it finished).
int print_summary(const ParseArgs& args, const Summary& s, double parse_ms, std::optional<double> transfer_ms,
                  double total_ms) {
  const std::string file = args.file == "-" ? "-" : args.file;
  if (s.has_pointer && !s.pointer_found) {
    std::cerr << "cancellable: --pointer " << *args.pointer << ": not found in " << file << "\n";
    return kExitError;
  }
  if (args.json) {
    std::ostringstream out;
    out << "{\"file\": " << json_string(file) << ", \"bytes\": " << s.bytes << ", \"backend\": \"" << args.backend
        << "\"";
    if (s.has_pointer) {
      out << ", \"pointer\": " << json_string(*args.pointer) << ", \"value\": " << s.pointer_value;
    } else {
      out << ", \"objects\": " << s.objects << ", \"arrays\": " << s.arrays << ", \"strings\": " << s.strings
          << ", \"numbers\": " << s.numbers << ", \"booleans\": " << s.booleans << ", \"nulls\": " << s.nulls
          << ", \"depth\": " << s.max_depth;
    }
    char times[160];
    char transfer[32] = "null";
    if (transfer_ms) std::snprintf(transfer, sizeof transfer, "%.3f", *transfer_ms);
    std::snprintf(times, sizeof times, ", \"parse_ms\": %.3f, \"transfer_ms\": %s, \"total_ms\": %.3f}", parse_ms,
                  transfer, total_ms);
    std::cout << out.str() << times << "\n";
    return kExitOk;
  }
  if (s.has_pointer) {
    std::cout << s.pointer_value << "\n";
    return kExitOk;
  }
  std::cout << "file:     " << file << "\n"
            << "bytes:    " << format_size(s.bytes) << "\n"
            << "backend:  " << args.backend << "\n"
            << "objects:  " << s.objects << "\n"
            << "arrays:   " << s.arrays << "\n"
            << "strings:  " << s.strings << "\n"
            << "numbers:  " << s.numbers << "\n"
            << "booleans: " << s.booleans << "\n"
            << "nulls:    " << s.nulls << "\n"
            << "depth:    " << s.max_depth << "\n"
            << "parse:    " << format_ms(parse_ms)
            << (transfer_ms ? " (start, read and parse)\n" : " (the task in the pool's worker: read and parse)\n");
  if (transfer_ms) std::cout << "transfer: " << format_ms(*transfer_ms) << " (summary done to result here)\n";
  std::cout << "total:    " << format_ms(total_ms) << "\n";
  return kExitOk;
}

// The worker program for --backend pool: CANCELLABLE_WORKER_PROGRAM, or
// cancellable-worker installed beside this command (bin/), or in the build
// tree (the command is in tools/, the worker one level up).
std::filesystem::path find_worker_program() {
  if (const char* path = std::getenv("CANCELLABLE_WORKER_PROGRAM")) return path;
  std::error_code ignored;
  const auto here = std::filesystem::read_symlink("/proc/self/exe", ignored).parent_path();
  for (const auto& candidate : {here / "cancellable-worker", here.parent_path() / "cancellable-worker"}) {
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return here / "cancellable-worker";  // (the pool's start then says it is missing)
}

// --backend pool: the parse runs as the count_json_file task of
// cancellable-worker, in a one-worker pool.
int run_parse_in_pool(const ParseArgs& args, const SignalCancellationToken& interrupt) {
  struct stat st {};
  if (args.pointer) {
    std::cerr << "cancellable: --backend pool does not take --pointer (see --help)\n";
    return kExitUsage;
  }
  if (args.file == "-" || ::stat(args.file.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    std::cerr << "cancellable: --backend pool reads regular files only, not " << args.file
              << " (use the process or thread backend)\n";
    return kExitUsage;
  }
  const auto started = Clock::now();
  try {
    PoolOptions options;
    options.worker_program = find_worker_program();
    options.standby = 0;
    WorkerPool pool(options);
    TaskOptions task_options;
    task_options.timeout = args.timeout;
    const auto task_started = Clock::now();
    Summary s;
    builtin::JsonCounts counts;
    try {
      counts = pool.run(builtin::count_json_file, args.file, interrupt, task_options).get();
    } catch (const CancelledException&) {
      const int sig = interrupt.signal() != 0 ? interrupt.signal() : SIGINT;
      std::cerr << "cancellable: parse interrupted by SIG" << ::sigabbrev_np(sig) << "; the worker was killed\n";
      leave_now(kExitSignalBase + sig);
    } catch (const TimeoutException& e) {
      std::cerr << "cancellable: parse timed out after " << format_duration(e.timeout()) << "; the worker was killed\n";
      leave_now(kExitTimeout);
    }
    const auto finished = Clock::now();
    s.bytes = counts.bytes;
    add_counts(counts, s);
    const double parse_ms = std::chrono::duration<double, std::milli>(finished - task_started).count();
    const double total_ms = std::chrono::duration<double, std::milli>(finished - started).count();
    return print_summary(args, s, parse_ms, std::nullopt, total_ms);
  } catch (const std::exception& e) {
    std::cerr << "cancellable: " << e.what() << "\n";
    return kExitError;
  }
}

}  // namespace

int run_parse(const ParseArgs& args) {
  SignalCancellationToken interrupt;  // SIGINT, SIGTERM (blocked here, taken by the signal thread)
  start_job_control();
  if (args.backend == "pool") return run_parse_in_pool(args, interrupt);
  const bool thread_backend = args.backend == "thread";
  const auto started = Clock::now();
  const auto started_ns = now_ns();

  // Regular files are opened and mapped by the worker. An open descriptor
  // (/dev/stdin, /dev/fd/N from <(...)) becomes standard input, which the
  // worker reads as it is: a forked worker keeps only descriptors 0, 1 and
  // 2. Anything else (a FIFO, a device) is opened by the work itself: an
  // open() that waits for a FIFO's writer then waits in the worker, which
  // --timeout, Ctrl-C and SIGTERM stop like any other work.
  std::string path = args.file;
  std::optional<std::uint64_t> known_bytes;
  bool open_in_work = false;
  const auto descriptor_of = [](const std::string& p) -> int {
    for (const std::string prefix : {"/dev/fd/", "/proc/self/fd/"}) {
      if (p.rfind(prefix, 0) != 0 || p.size() == prefix.size()) continue;
      const std::string digits = p.substr(prefix.size());
      if (digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 9) return -1;
      return std::stoi(digits);
    }
    return -1;
  };
  if (args.file == "-" || args.file == "/dev/stdin") {
    path = "/dev/stdin";
  } else if (const int fd = descriptor_of(path); fd >= 0) {
    if (fd != STDIN_FILENO && ::dup2(fd, STDIN_FILENO) < 0) {
      const std::error_code error(errno, std::generic_category());
      std::cerr << "cancellable: cannot read " << args.file << ": " << error.message() << "\n";
      return kExitError;
    }
    path = "/dev/stdin";
  } else {
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) {
      if (S_ISREG(st.st_mode)) {
        known_bytes = static_cast<std::uint64_t>(st.st_size);
      } else if (!S_ISDIR(st.st_mode)) {
        open_in_work = true;
      }
    }
  }

  IsolateOptions options;
  options.backend = thread_backend ? Backend::thread : Backend::process;
  options.timeout = args.timeout;
  std::unique_ptr<ProgressLine> progress;
  if (::isatty(STDERR_FILENO) && (!known_bytes || *known_bytes > 100'000'000)) {
    progress = std::make_unique<ProgressLine>(started, known_bytes);
    options.progress_interval = std::chrono::milliseconds(50);
    options.on_progress = [line = progress.get()](const Progress& p) { line->report(p); };
    progress->start();
  }

  const auto arena = known_bytes ? detail::arena_for(static_cast<std::size_t>(*known_bytes)) : nullptr;
  const bool from_stdin = path == "/dev/stdin";
  auto work = [path, from_stdin, open_in_work, file = args.file, pointer = args.pointer, started_ns,
               memory = arena.get()] {
    report_progress(0, 0, open_in_work ? "opening" : "reading");
    try {
      const auto parsing = [] { report_progress(0, 0, "parsing"); };
      const auto reading = [](std::uint64_t read, std::uint64_t total) { report_progress(read, total, "reading"); };
      int fd = STDIN_FILENO;
      if (open_in_work) {
        fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);  // (a FIFO: until a writer opens it)
        if (fd < 0) {
          throw std::runtime_error("cannot read " + file + ": " +
                                   std::error_code(errno, std::generic_category()).message());
        }
        report_progress(0, 0, "reading");
      }
      struct Closer {
        int fd;
        ~Closer() {
          if (fd >= 0) ::close(fd);
        }
      } closer{open_in_work ? fd : -1};
      // A descriptor is read where it is (see parse_json_descriptor_in_worker).
      const auto parsed = from_stdin || open_in_work
                              ? detail::parse_json_descriptor_in_worker(fd, path, JsonOptions{}, nullptr, false,
                                                                        parsing, reading)
                              : detail::parse_json_file_in_worker(path, JsonOptions{}, memory, false, parsing,
                                                                  reading);
      report_progress(0, 0, "summarizing");
      Summary s;
      s.bytes = parsed.size();
      s.parse_ns = now_ns() - started_ns;
      if (pointer) {
        s.has_pointer = true;
        simdjson::dom::element value;
        s.pointer_found = resolve_json_pointer(parsed.root(), *pointer, value);
        if (s.pointer_found) s.pointer_value = simdjson::to_string(value);
      } else {
        add_counts(detail::count_json(parsed.root(), parsed.size()), s);
      }
      s.finished_at_ns = now_ns();
      return s;
    } catch (const simdjson::simdjson_error& e) {
      detail::throw_json_error(e.error());
    }
  };
  // The thread backend on Ctrl-C or SIGTERM: the message and the exit come
  // from the signal thread, at once, written from a buffer made now. The
  // main thread may be slow to run: a parse thread inside madvise() over a
  // 1 GB mapping holds the address space's lock, and anything of the main
  // thread that maps memory (its allocations, its stack) waits for it.
  std::optional<ExitOnSignal> exit_on_signal;
  if (thread_backend) exit_on_signal.emplace(interrupt, progress != nullptr);
  auto isolate = detail::spawn_isolate<Summary>(std::move(work), interrupt, options, arena, true);

  Summary s;
  try {
    s = isolate.future().get();
  } catch (...) {
    if (progress) progress->clear();
    const char* what_happened = thread_backend
                                    ? "the parse thread was abandoned (a thread cannot be killed; exiting)"
                                    : "the worker was killed";
    try {
      throw;
    } catch (const CancelledException&) {
      const int sig = interrupt.signal() != 0 ? interrupt.signal() : SIGINT;
      std::cerr << "cancellable: parse interrupted by SIG" << ::sigabbrev_np(sig) << "; " << what_happened << "\n";
      leave_now(kExitSignalBase + sig);
    } catch (const TimeoutException& e) {
      std::cerr << "cancellable: parse timed out after " << format_duration(e.timeout()) << "; " << what_happened
                << "\n";
      leave_now(kExitTimeout);
    } catch (const std::exception& e) {
      std::cerr << "cancellable: " << e.what() << "\n";
      return kExitError;
    }
  }
  const auto received = now_ns();
  if (progress) progress->clear();
  const double total_ms = std::chrono::duration<double, std::milli>(Clock::now() - started).count();
  const double transfer_ms = ms(received - s.finished_at_ns);
  return print_summary(args, s, ms(s.parse_ns), transfer_ms, total_ms);
}

}  // namespace cancellable::cli
