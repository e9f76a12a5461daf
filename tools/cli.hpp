// The `cancellable` command: shared pieces of its sub-commands.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace cancellable::cli {

// Exit statuses, documented in `cancellable --help`.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;          // the work failed (bad JSON, missing file, ...)
inline constexpr int kExitUsage = 2;          // bad arguments
inline constexpr int kExitTimeout = 124;      // --timeout passed (as timeout(1))
inline constexpr int kExitSignalBase = 128;   // + the signal: 130 Ctrl-C (SIGINT), 143 SIGTERM

// The largest --timeout: about 31 years, far from the clocks' limits.
inline constexpr std::chrono::nanoseconds kMaxTimeout{1'000'000'000'000'000'000};

// "250ms", "2s", "1.5s", "1m", "500us": a duration, or nothing if malformed
// (*too_large is set when it is well formed but over kMaxTimeout).
std::optional<std::chrono::nanoseconds> parse_duration(const std::string& text, bool* too_large = nullptr);

// "2000000", "20MB", "1.5GB", "300kB" (decimal units): a byte count, or
// nothing if malformed.
std::optional<std::uint64_t> parse_size(const std::string& text);

// Sizes and times as the command prints them: "12.3 MB (12345678 bytes)",
// "1.25 GB (...)", "123.4 ms".
std::string format_size(std::uint64_t bytes);
std::string format_ms(double ms);
// A size for a progress line: "3.2 kB", "812.4 MB", "1.07 GB".
std::string short_size(double bytes);

// Flushes stdout and stderr and exits at once with status: after a cancel
// the thread backend's parse thread may still run (it cannot be stopped),
// and a normal exit would destroy what it uses.
[[noreturn]] void leave_now(int status);

// Must be called first in main, before any thread exists: blocks the signals
// the command handles so that only its own threads take them.
void block_command_signals();

// Ctrl-Z (SIGTSTP): stops the process groups of this process's workers
// (which are not the terminal's foreground group, so the terminal does not
// stop them), then this process; SIGCONT (fg, bg) continues the workers too.
// A thread of its own waits for both.
void start_job_control();

// "cancellable X.Y.Z" and the versions of simdjson, Boost and OpenSSL it was
// built with.
std::string version_text();

int run_demo(const std::string& backend);
struct ParseArgs {
  std::string file;  // "-": standard input
  std::optional<std::chrono::nanoseconds> timeout;
  std::string backend = "process";  // process | thread | pool
  std::optional<std::string> pointer;
  bool json = false;
};
int run_parse(const ParseArgs& args);
int run_bench(bool quick, bool json);
struct GenerateArgs {
  std::uint64_t bytes = 0;
  std::uint64_t seed = 1;
  std::string output;  // empty or "-": standard output
};
int run_generate(const GenerateArgs& args);
struct FetchArgs {
  std::string url;
  std::optional<std::chrono::nanoseconds> timeout;
  bool parse = false;
  std::string output;   // empty: standard output (unless --parse)
  std::string ca_file;  // extra trusted certificates (PEM)
  std::optional<std::string> proxy;  // unset: the environment's (http_proxy, https_proxy, no_proxy)
};
int run_fetch(const FetchArgs& args);

}  // namespace cancellable::cli
