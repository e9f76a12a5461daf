// One process-wide signal thread: the handlers write the signal's number to
// a pipe, the thread reads it and cancels every live token that watches it.
#include "cancellable/signal_cancellation_token.hpp"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

#include "cancellable/exceptions.hpp"
#include "runner/core/token_state.hpp"

namespace cancellable {

struct SignalCancellationToken::Watch {
  std::weak_ptr<detail::TokenState> state;
  std::vector<int> signals;
  std::atomic<int> signal{0};
};

namespace {

constexpr int kMaxSignal = 64;

// Written by the handler, read by the signal thread (both ends close-on-exec).
std::atomic<int> pipe_write_end{-1};
// Per signal: restore the default action when it arrives.
std::atomic<bool> restore_default[kMaxSignal + 1];

extern "C" void on_signal(int sig) {
  const int saved_errno = errno;
  if (sig > 0 && sig <= kMaxSignal && restore_default[sig].load(std::memory_order_relaxed)) {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(sig, &dfl, nullptr);
  }
  const unsigned char byte = static_cast<unsigned char>(sig);
  const int fd = pipe_write_end.load(std::memory_order_relaxed);
  if (fd >= 0) (void)!::write(fd, &byte, 1);
  errno = saved_errno;
}

class SignalThread {
 public:
  static SignalThread& instance() {
    static auto* thread = new SignalThread();  // never destroyed: the handlers outlive main
    return *thread;
  }

  void watch(const std::shared_ptr<SignalCancellationToken::Watch>& w, bool restore) {
    std::lock_guard lock(mutex_);
    watches_.erase(std::remove_if(watches_.begin(), watches_.end(),
                                  [](const auto& weak) { return weak.expired(); }),
                   watches_.end());
    watches_.push_back(w);
    bool added = false;
    for (const int sig : w->signals) {
      if (restore) restore_default[sig].store(true, std::memory_order_relaxed);
      if (installed_[sig]) continue;
      added = true;
      struct sigaction action {};
      action.sa_handler = on_signal;
      sigemptyset(&action.sa_mask);
      action.sa_flags = SA_RESTART;
      if (::sigaction(sig, &action, nullptr) != 0) {
        throw std::system_error(errno, std::generic_category(), "SignalCancellationToken: sigaction");
      }
      installed_[sig] = true;
    }
    // The signal thread unblocks the new signals for itself (only it can).
    if (added) {
      const unsigned char update = 0;
      (void)!::write(pipe_write_end.load(), &update, 1);
    }
  }

 private:
  SignalThread() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      throw std::system_error(errno, std::generic_category(), "SignalCancellationToken: pipe");
    }
    pipe_write_end.store(fds[1]);
    read_end_ = fds[0];
    // The thread starts with its creator's mask (the token's signals
    // blocked) and unblocks only the watched signals: any other signal the
    // program blocked and waits for elsewhere (sigwait) stays its own.
    std::thread([this] { run(); }).detach();
  }

  // On the signal thread: unblocks every watched signal.
  void unblock_watched() {
    sigset_t set;
    sigemptyset(&set);
    {
      std::lock_guard lock(mutex_);
      for (int sig = 1; sig <= kMaxSignal; ++sig) {
        if (installed_[sig]) sigaddset(&set, sig);
      }
    }
    ::pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  }

  void run() {
    for (;;) {
      unsigned char byte = 0;
      const ssize_t n = ::read(read_end_, &byte, 1);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      if (byte == 0) {
        unblock_watched();  // a token watches new signals
      } else {
        deliver(byte);
      }
    }
  }

  // Cancels every live token watching sig, outside the lock.
  void deliver(int sig) {
    std::vector<std::pair<std::shared_ptr<SignalCancellationToken::Watch>, std::shared_ptr<detail::TokenState>>>
        targets;
    {
      std::lock_guard lock(mutex_);
      for (const auto& weak : watches_) {
        auto w = weak.lock();
        if (!w || std::find(w->signals.begin(), w->signals.end(), sig) == w->signals.end()) continue;
        if (auto state = w->state.lock()) targets.emplace_back(std::move(w), std::move(state));
      }
    }
    const char* name = ::sigabbrev_np(sig);
    const std::string reason = std::string("interrupted by ") + (name ? std::string("SIG") + name : "signal " + std::to_string(sig));
    for (auto& [w, state] : targets) {
      if (state->is_cancelled()) continue;
      int none = 0;
      w->signal.compare_exchange_strong(none, sig);
      state->cancel(std::make_exception_ptr(CancelledException(reason)));
    }
  }

  std::mutex mutex_;
  std::vector<std::weak_ptr<SignalCancellationToken::Watch>> watches_;
  bool installed_[kMaxSignal + 1] = {};
  int read_end_ = -1;
};

std::shared_ptr<detail::TokenState> new_state() { return std::make_shared<detail::TokenState>(); }

}  // namespace

SignalCancellationToken::SignalCancellationToken(SignalOptions options)
    : SignalCancellationToken(std::move(options), new_state()) {}

SignalCancellationToken::SignalCancellationToken(SignalOptions options, std::shared_ptr<detail::TokenState> state)
    : CancellationToken(state), watch_(std::make_shared<Watch>()) {
  if (options.signals.empty()) throw std::invalid_argument("SignalCancellationToken: no signals");
  sigset_t set;
  sigemptyset(&set);
  for (const int sig : options.signals) {
    if (sig <= 0 || sig > kMaxSignal || sig == SIGKILL || sig == SIGSTOP) {
      throw std::invalid_argument("SignalCancellationToken: signal " + std::to_string(sig) + " cannot be caught");
    }
    sigaddset(&set, sig);
  }
  watch_->state = state;
  watch_->signals = options.signals;
  // Blocked here and in the threads this one starts from now on: only the
  // signal thread takes them.
  ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
  SignalThread::instance().watch(watch_, options.restore_default_after_first);
}

int SignalCancellationToken::signal() const noexcept { return watch_->signal.load(); }

}  // namespace cancellable
