#include "cancellable/cancellation_token.hpp"

#include "cancellable/cancellable_base.hpp"
#include "cancellable/exceptions.hpp"
#include "cancellable/merged_cancellation_token.hpp"
#include "runner/core/token_state.hpp"

namespace cancellable {

CancellationToken::CancellationToken() : state_(std::make_shared<detail::TokenState>()) {}

bool CancellationToken::is_cancelled() const noexcept {
  return state_ && state_->is_cancelled();
}

std::exception_ptr CancellationToken::exception() const noexcept {
  return state_ ? state_->exception() : nullptr;
}

bool CancellationToken::cancel() const { return cancel(nullptr); }

bool CancellationToken::cancel(std::exception_ptr exception) const {
  return state_ && state_->request_cancel(std::move(exception));
}

bool CancellationToken::cancel_with_reason(std::string reason) const {
  return cancel(std::make_exception_ptr(CancelledException(std::move(reason))));
}

bool CancellationToken::attach_cancellable(Cancellable& c) const { return c.attach_to(*this); }

void CancellationToken::detach_cancellable(Cancellable& c) const {
  if (state_) state_->detach(c);
}

bool CancellationToken::has_cancellables() const { return state_ && state_->has_cancellables(); }

MergedCancellationToken CancellationToken::merge(const CancellationToken& other) const {
  return MergedCancellationToken{*this, other};
}

std::stop_token CancellationToken::stop_token() const {
  return state_ ? state_->stop_token() : std::stop_token();
}

}  // namespace cancellable
