// Cancellable: the base class for your own cancellable operations.
//
// Who uses it: code that owns a resource an operation holds (a socket, a
// child process, a buffer) and must release it the moment a token is
// cancelled. Derive from Cancellable, implement on_cancel(), and follow the
// three rules:
//   1. Start the work only when maybe_attach() returned true.
//   2. Call detach() when the work completes normally, and in your destructor
//      (before your members are destroyed).
//   3. Never cancel the token from inside a cancellable.
//
// Guarantees:
//   - maybe_attach(token) on a cancelled token does not attach, calls
//     on_cancel(token.exception()) before returning, and returns false. (The
//     Dart original defers that call to a microtask; C++ has none, so call
//     maybe_attach after your members are initialised.)
//   - on_cancel runs at most once per attachment, on the thread that cancels.
//   - After detach() returns, on_cancel is not running on another thread and
//     will not be called. detach() from inside on_cancel does not wait.
//   - is_cancelled() is true as soon as the token is cancelled, even before
//     this cancellable's turn in the notification order.
//
// Thread-safety: a Cancellable is attached to at most one token at a time.
// maybe_attach/detach on one object must not race each other; is_cancelled()
// may be called from any thread. Not copyable or movable: the token refers to
// it by address while attached.
#pragma once

#include <atomic>
#include <exception>

#include "cancellable/cancellation_token.hpp"

namespace cancellable {

class Cancellable {
 public:
  Cancellable() = default;
  Cancellable(const Cancellable&) = delete;
  Cancellable& operator=(const Cancellable&) = delete;
  // Detaches as a last resort. Derived classes must call detach() in their own
  // destructor: by the time this one runs, the derived part is already gone.
  virtual ~Cancellable();

  // Attaches to token and returns true, or, if the token is already cancelled,
  // calls on_cancel(token.exception()) and returns false.
  // Throws std::logic_error if this object is attached to another token.
  bool maybe_attach(const CancellationToken& token);
  // Detaches from the token; see the guarantees above.
  void detach();
  // True once the token given to maybe_attach is cancelled.
  bool is_cancelled() const noexcept { return token_.is_cancelled(); }
  // The token given to maybe_attach (none() before).
  const CancellationToken& cancellation_token() const noexcept { return token_; }

 protected:
  // Called once when the token is cancelled while attached, with the token's
  // exception. Release resources and fail the operation with that exception.
  // Must not throw (a throw calls std::terminate) and must not block on work
  // that waits for this cancellable to detach.
  virtual void on_cancel(std::exception_ptr exception) = 0;

 private:
  friend class detail::TokenState;
  friend class CancellationToken;
  // What maybe_attach and CancellationToken::attach_cancellable share:
  // records the token, then attaches; false if the token is cancelled.
  bool attach_to(const CancellationToken& token);

  CancellationToken token_ = CancellationToken::none();
  // Intrusive list links, guarded by the mutex of the token attached to.
  Cancellable* prev_ = nullptr;
  Cancellable* next_ = nullptr;
  std::atomic<detail::TokenState*> attached_to_{nullptr};
};

}  // namespace cancellable
