// MergedCancellationToken: a token cancelled as soon as any of several tokens
// is.
//
// Who holds it: code that must stop for more than one reason, such as "the
// user cancelled" or "the server is shutting down", or a per-request deadline
// merged with a long-lived shutdown token.
//
// Guarantees:
//   - is_cancelled() is true as soon as any merged token is (also when one
//     already was at construction). Its own cancel() does not cancel the
//     tokens it merges.
//   - It attaches itself to its tokens only while it has cancellables of its
//     own, and detaches when the last one leaves or when it is cancelled: a
//     merged token made per request on a long-lived token leaves nothing
//     behind on it. Exception: once stop_token() was called it stays attached
//     until the merged token is destroyed (the stop_token must be fed).
//   - Its exception: the exception of the token that was cancelled first in
//     time, if something was attached then, or its own cancel() argument; with
//     nothing attached, the exception of the first cancelled token in list
//     order when it is first read. Once read it never changes: a token of the
//     list cancelled later, or work started later, sees the same exception.
//     Its own cancel() after one of its tokens cancelled it returns false.
//   - Destroying it is safe while any of its tokens is being cancelled on
//     another thread (the destructor waits for that notification to leave
//     it). No library lock is held while its cancellables are notified, even
//     when a token it merges is cancelled while it links itself to it.
//
// Thread-safety: as CancellationToken. Lifetime: holds copies of the tokens it
// merges (keeping their state alive), not the other way round.
#pragma once

#include <initializer_list>
#include <vector>

#include "cancellable/cancellation_token.hpp"

namespace cancellable {

class MergedCancellationToken : public CancellationToken {
 public:
  explicit MergedCancellationToken(std::vector<CancellationToken> tokens);
  MergedCancellationToken(std::initializer_list<CancellationToken> tokens)
      : MergedCancellationToken(std::vector<CancellationToken>(tokens)) {}
};

}  // namespace cancellable
