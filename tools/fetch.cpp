// cancellable fetch URL: download (and with --parse, parse the JSON in an
// isolate) under one token that Ctrl-C, SIGTERM and --timeout cancel.
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>

#include "cancellable/cancellable.hpp"
#include "cancellable/http.hpp"
#include "cancellable/json.hpp"
#include "tools/cli.hpp"

namespace cancellable::cli {

namespace {

using Clock = std::chrono::steady_clock;

// "downloading 3.2 MB of 10.0 MB, 5.1 MB/s" on a terminal's stderr, at most
// every 100 ms; cleared before anything else is printed.
class DownloadLine {
 public:
  explicit DownloadLine(std::optional<std::uint64_t> total) : total_(total), shown_(::isatty(STDERR_FILENO)) {}
  void update(std::uint64_t bytes, bool force = false) {
    if (!shown_) return;
    const auto now = Clock::now();
    if (!force && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    const double s = std::chrono::duration<double>(now - started_).count();
    std::string text = "downloading " + short_size(static_cast<double>(bytes));
    if (total_) text += " of " + short_size(static_cast<double>(*total_));
    if (s > 0) text += ", " + short_size(static_cast<double>(bytes) / s) + "/s";
    std::fprintf(stderr, "\r%-64s", text.c_str());
    std::fflush(stderr);
    drawn_ = true;
  }
  void clear() {
    if (drawn_) std::fprintf(stderr, "\r%64s\r", "");
    drawn_ = false;
  }
  ~DownloadLine() { clear(); }

 private:
  std::optional<std::uint64_t> total_;
  bool shown_;
  bool drawn_ = false;
  Clock::time_point started_ = Clock::now();
  Clock::time_point last_{};
};

}  // namespace

int run_fetch(const FetchArgs& args) {
  SignalCancellationToken interrupt;  // SIGINT, SIGTERM (blocked here, taken by the signal thread)
  std::optional<TimeoutCancellationToken> deadline;
  CancellationToken token = interrupt;
  std::optional<MergedCancellationToken> merged;
  if (args.timeout) {
    deadline.emplace(*args.timeout);
    merged.emplace(interrupt.merge(*deadline));
    token = *merged;
  }
  std::optional<std::ofstream> file;
  auto fail_cleanup = [&] {
    if (file) {
      file->close();
      std::remove(args.output.c_str());
    }
  };
  try {
    http::ClientOptions options;
    options.ca_file = args.ca_file;
    options.proxy = args.proxy;
    std::optional<http::Client> client_holder;
    try {
      client_holder.emplace(options);
    } catch (const std::invalid_argument& e) {  // (A bad --proxy or --ca-file: the user's own input.)
      std::cerr << "cancellable: " << e.what() << "\n";
      return kExitUsage;
    }
    http::Client& client = *client_holder;
    auto response = client.send(http::Request("GET", args.url), token).get();
    if (response.status < 200 || response.status >= 300) {
      std::cerr << "cancellable: GET " << response.url << ": status " << response.status << " " << response.reason
                << "\n";
      return kExitError;
    }
    std::optional<std::uint64_t> total;
    if (auto length = response.headers.get("content-length"); length && !response.headers.contains("content-encoding"))
      total = std::stoull(*length);
    if (!args.output.empty() && args.output != "-") {
      file.emplace(args.output, std::ios::binary | std::ios::trunc);
      if (!*file) {
        std::cerr << "cancellable: cannot write " << args.output << ": " << ::strerror(errno) << "\n";
        return kExitError;
      }
    }
    const bool to_stdout = !file && (!args.parse || args.output == "-");
    DownloadLine line(total);
    std::string body;
    std::uint64_t bytes = 0;
    while (auto piece = response.read_chunk(token).get()) {
      bytes += piece->size();
      if (file) file->write(piece->data(), static_cast<std::streamsize>(piece->size()));
      if (to_stdout) std::fwrite(piece->data(), 1, piece->size(), stdout);
      if (args.parse) body += *piece;
      line.update(bytes);
    }
    line.clear();
    if (file && !file->flush()) {
      std::cerr << "cancellable: cannot write " << args.output << ": " << ::strerror(errno) << "\n";
      fail_cleanup();
      return kExitError;
    }
    if (!args.parse) return kExitOk;
    auto counts = parse_json(
                      body,
                      [size = body.size()](simdjson::dom::element root) { return detail::count_json(root, size); },
                      token)
                      .get();
    std::cout << "url:      " << response.url << "\n"
              << "bytes:    " << format_size(bytes) << "\n"
              << "objects:  " << counts.objects << "\n"
              << "arrays:   " << counts.arrays << "\n"
              << "strings:  " << counts.strings << "\n"
              << "numbers:  " << counts.numbers << "\n"
              << "booleans: " << counts.booleans << "\n"
              << "nulls:    " << counts.nulls << "\n"
              << "depth:    " << counts.depth << "\n";
    return kExitOk;
  } catch (const CancelledException&) {
    fail_cleanup();
    const int sig = interrupt.signal() != 0 ? interrupt.signal() : SIGINT;
    std::cerr << "cancellable: fetch interrupted by SIG" << ::sigabbrev_np(sig) << "\n";
    leave_now(kExitSignalBase + sig);
  } catch (const TimeoutException& e) {
    fail_cleanup();
    std::cerr << "cancellable: fetch timed out after " << format_duration(e.timeout()) << "\n";
    leave_now(kExitTimeout);
  } catch (const http::HttpError& e) {
    fail_cleanup();
    std::cerr << "cancellable: " << e.what() << "\n";
    // 2 for the user's own URL only; a server's redirect to something we
    // cannot follow (bad_redirect) is the server's failure: 1.
    return e.kind() == http::HttpError::Kind::bad_url ? kExitUsage : kExitError;
  } catch (const std::exception& e) {
    fail_cleanup();
    std::cerr << "cancellable: " << e.what() << "\n";
    return kExitError;
  }
}

}  // namespace cancellable::cli
