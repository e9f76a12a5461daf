// SignalCancellationToken: a CancellationToken that cancels itself when the
// process receives one of a set of signals (SIGINT and SIGTERM by default):
// Ctrl-C for a command-line program, a service manager's stop for a daemon.
//
//   int main() {
//     cancellable::SignalCancellationToken interrupt;   // first thing in main
//     auto result = cancellable::parse_json_file(path, summarize, interrupt);
//     try { print(result.get()); }
//     catch (const cancellable::CancelledException&) { return 128 + interrupt.signal(); }
//   }
//
// Guarantees:
//   - On the first of its signals the token cancels with a CancelledException
//     whose reason names the signal ("interrupted by SIGINT"); signal() says
//     which. Attached cancellables are notified on the library's signal
//     thread, never inside the signal handler (which only writes one byte to
//     a pipe), so on_cancel may do anything it may do on another thread.
//   - The signals are handled on that thread, which does nothing else (and
//     leaves every other signal as its creator's mask had it, so a program
//     that waits for, say, SIGTSTP with sigwait() still gets it): a
//     program thread blocked in the kernel (a page fault on a huge mapping,
//     an uninterruptible read) does not delay them. For that the constructor
//     blocks the signals in the calling thread, and threads it starts later
//     inherit the block: construct the token in main() before starting
//     threads. A thread started earlier that does not block them may run the
//     handler itself (harmless: it only writes the byte).
//   - restore_default_after_first (the default): once one of the signals has
//     arrived, the token's signals take their default action again, so a
//     second Ctrl-C ends a program that does not stop by itself.
//   - Several tokens may watch the same signals: each is cancelled.
//
// Errors: std::invalid_argument for a signal that cannot be caught (SIGKILL,
// SIGSTOP) or out of range; std::system_error if the handler, the pipe or
// the thread cannot be set up.
//
// Thread-safety: as CancellationToken; construct from any thread (see above
// for which). Lifetime: the handlers and the signal thread stay installed
// until the process exits (signal dispositions are process-wide); a token
// that is gone is simply not cancelled.
#pragma once

#include <signal.h>

#include <memory>
#include <vector>

#include "cancellable/cancellation_token.hpp"

namespace cancellable {

struct SignalOptions {
  // The signals that cancel the token.
  std::vector<int> signals = {SIGINT, SIGTERM};
  // After the first of them, let them take their default action again.
  bool restore_default_after_first = true;
};

class SignalCancellationToken : public CancellationToken {
 public:
  explicit SignalCancellationToken(SignalOptions options = {});

  // The signal that cancelled the token; 0 while none has (or if the token
  // was cancelled otherwise).
  int signal() const noexcept;

 public:
  struct Watch;  // (internal)

 private:
  SignalCancellationToken(SignalOptions options, std::shared_ptr<detail::TokenState> state);
  std::shared_ptr<Watch> watch_;
};

}  // namespace cancellable
