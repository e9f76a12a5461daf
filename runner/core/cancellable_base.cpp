#include "cancellable/cancellable_base.hpp"

#include <stdexcept>

#include "runner/core/token_state.hpp"

namespace cancellable {

Cancellable::~Cancellable() { detach(); }

bool Cancellable::maybe_attach(const CancellationToken& token) {
  if (attach_to(token)) return true;
  on_cancel(token.exception());
  return false;
}

// The one attach path, whether it starts here or at the token: the
// cancellable always knows its token, so detach() and the destructor reach it.
bool Cancellable::attach_to(const CancellationToken& token) {
  detail::TokenState* current = attached_to_.load(std::memory_order_acquire);
  if (current != nullptr) {
    if (current == token.state_.get()) return true;
    throw std::logic_error("Cancellable is already attached to another CancellationToken");
  }
  // token_ is set before attaching: once attached, on_cancel may run on
  // another thread and read it.
  token_ = token;
  return !token.state_ || token.state_->attach(*this);
}

void Cancellable::detach() { token_.detach_cancellable(*this); }

}  // namespace cancellable
