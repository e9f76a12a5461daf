#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <regex>
#include <thread>

#include "tools/cli.hpp"

namespace cancellable::cli {

std::optional<std::chrono::nanoseconds> parse_duration(const std::string& text) {
  static const std::regex pattern(R"(^([0-9]+(\.[0-9]+)?)(ns|us|ms|s|m)$)");
  std::smatch match;
  if (!std::regex_match(text, match, pattern)) return std::nullopt;
  const double value = std::strtod(match[1].str().c_str(), nullptr);
  const std::string unit = match[3];
  const double ns = unit == "ns"   ? value
                    : unit == "us" ? value * 1e3
                    : unit == "ms" ? value * 1e6
                    : unit == "s"  ? value * 1e9
                                   : value * 60e9;
  return std::chrono::nanoseconds(static_cast<std::int64_t>(ns));
}

struct InterruptWatcher::State {
  CancellationToken token;
  std::atomic<bool> interrupted{false};
  std::thread thread;
};

InterruptWatcher::InterruptWatcher(CancellationToken token) {
  // Reachable for the whole run (the watcher thread outlives this object).
  static State* current = nullptr;
  current = new State{std::move(token), {}, {}};
  state_ = current;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
  state_->thread = std::thread([state = state_, set] {
    int sig = 0;
    while (::sigwait(&set, &sig) != 0) {
    }
    state->interrupted.store(true);
    state->token.cancel_with_reason(sig == SIGINT ? "interrupted (Ctrl-C)" : "terminated");
  });
  state_->thread.detach();
}

// The watcher thread may still be waiting: the process is about to exit, and
// the state it uses is left for it.
InterruptWatcher::~InterruptWatcher() = default;

bool InterruptWatcher::interrupted() const noexcept { return state_->interrupted.load(); }

}  // namespace cancellable::cli
