// CancellationToken: the handle through which work is asked to stop.
//
// Who holds it: the code that decides when to stop (a request handler, a UI,
// a deadline) creates the token and calls cancel(). A function that only needs
// to *be* cancellable takes a CancellationToken by value (it is a cheap handle)
// and attaches to it, through a Cancellable, a CancellableCompleter or one of
// the CancellableFuture factories. Every function that takes a token also works
// without one: pass CancellationToken::none(), which is never cancelled.
//
// Guarantees:
//   - The first cancellation wins. Later calls to cancel() change nothing,
//     whatever exception they pass, and return false.
//   - The exception is stored before anyone is notified; exception() returns
//     the same std::exception_ptr on every read afterwards, so every task failed
//     by this token fails with that exact exception object.
//   - Attached cancellables are notified synchronously on the thread that calls
//     cancel(), in attach order, with no internal lock held; the list is then
//     empty. A callback that throws calls std::terminate (as std::stop_callback).
//   - Race between attach and cancel on two threads: either attach returns
//     false (the token was already cancelled) or the cancellable is notified by
//     the cancelling thread; never neither, never both.
//
// Thread-safety: distinct objects: safe. Shared objects: safe; every member
// may be called concurrently from any thread, and copies are the same token.
// Lifetime: the shared state lives as long as any copy, or any cancellable
// attached to it.
#pragma once

#include <exception>
#include <memory>
#include <stop_token>
#include <string>

namespace cancellable {

class Cancellable;
class MergedCancellationToken;

namespace detail {
class TokenState;
}  // namespace detail

class CancellationToken {
 public:
  // A new token that is not cancelled.
  CancellationToken();

  // The "no token" token: never cancelled; attaching to it succeeds and does
  // nothing; cancel() on it does nothing and returns false.
  static CancellationToken none() noexcept { return CancellationToken(nullptr); }
  bool is_none() const noexcept { return state_ == nullptr; }

  bool is_cancelled() const noexcept;
  // Null before cancellation; afterwards the exception it was cancelled with.
  std::exception_ptr exception() const noexcept;

  // Cancels with a CancelledException. Returns true if this call cancelled the
  // token, false if it was already cancelled (or is none()).
  bool cancel() const;
  // Cancels with the given exception (any type; a null pointer means
  // CancelledException).
  bool cancel(std::exception_ptr exception) const;
  // Cancels with CancelledException(reason).
  bool cancel_with_reason(std::string reason) const;

  // Attaches c so that it is notified on cancellation. Returns false, without
  // attaching and without notifying, if the token is already cancelled.
  // Either way c is left as c.maybe_attach(*this) leaves it (it records this
  // token: c.detach(), c's destructor and c.is_cancelled() work on it); the
  // only difference is that maybe_attach also calls on_cancel when the token
  // is already cancelled. Attaching the same cancellable twice attaches it
  // once. Most code calls Cancellable::maybe_attach instead.
  // Throws std::logic_error if c is attached to a different token.
  bool attach_cancellable(Cancellable& c) const;
  // Removes c. If c's on_cancel is running on another thread, waits until it
  // has returned; afterwards it will not be called, so a destructor may detach
  // and then free the object. A no-op when c is not attached: on a cancelled
  // token every cancellable already notified is detached, so this is safe in
  // on_cancel. (A cancellable that a running cancel() has not reached yet is
  // removed and not called, unlike Dart, where detaching during notification
  // does nothing: C++ needs the guarantee to free memory safely.)
  void detach_cancellable(Cancellable& c) const;
  // True while anything is attached; lets tests prove that finished work
  // detached.
  bool has_cancellables() const;

  // A token that is cancelled as soon as this one or other is.
  MergedCancellationToken merge(const CancellationToken& other) const;

  // A std::stop_token that is stop-requested when this token is cancelled
  // (already requested if it is), for cooperative C++20 code. For none(), a
  // stop_token that can never be stopped.
  std::stop_token stop_token() const;

  // Copies compare equal: they are the same token.
  friend bool operator==(const CancellationToken&, const CancellationToken&) = default;

 protected:
  explicit CancellationToken(std::shared_ptr<detail::TokenState> state) noexcept
      : state_(std::move(state)) {}

 private:
  friend class Cancellable;
  friend class MergedCancellationToken;
  std::shared_ptr<detail::TokenState> state_;
};

}  // namespace cancellable
