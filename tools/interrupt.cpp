#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <thread>

#include "tools/cli.hpp"

namespace cancellable::cli {

std::optional<std::chrono::nanoseconds> parse_duration(const std::string& text) {
  // digits [. digits] unit, unit one of ns us ms s m
  std::size_t i = 0;
  auto digits = [&] {
    const std::size_t start = i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
    return i > start;
  };
  if (!digits()) return std::nullopt;
  if (i < text.size() && text[i] == '.') {
    ++i;
    if (!digits()) return std::nullopt;
  }
  const double value = std::strtod(text.substr(0, i).c_str(), nullptr);
  const std::string unit = text.substr(i);
  double scale = 0;
  if (unit == "ns") scale = 1;
  else if (unit == "us") scale = 1e3;
  else if (unit == "ms") scale = 1e6;
  else if (unit == "s") scale = 1e9;
  else if (unit == "m") scale = 60e9;
  else return std::nullopt;
  return std::chrono::nanoseconds(static_cast<std::int64_t>(value * scale));
}

struct InterruptWatcher::State {
  CancellationToken token;
  std::atomic<bool> interrupted{false};
  std::thread thread;
};

// The watcher's state, reachable for the whole run: its thread may still be
// waiting in sigwait() when the process exits. A global with external
// linkage, so that the store is not optimized away.
InterruptWatcher::State* interrupt_watcher_state = nullptr;

InterruptWatcher::InterruptWatcher(CancellationToken token) {
  interrupt_watcher_state = new State{std::move(token), {}, {}};
  state_ = interrupt_watcher_state;
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
