// TaskGroup's shared state (see include/cancellable/task_group.hpp).
#include "cancellable/task_group.hpp"

#include <stdexcept>
#include <string>

#include "cancellable/exceptions.hpp"
#include "cancellable/merged_cancellation_token.hpp"

namespace cancellable::detail {

namespace {
std::string describe(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception of unknown type";
  }
}
}  // namespace

GroupState::GroupState(const CancellationToken& parent, ChildFailure policy)
    : policy_(policy), token_(parent.is_none() ? own_ : CancellationToken(own_.merge(parent))) {}

bool GroupState::cancel() const { return own_.cancel_with_reason("the TaskGroup was cancelled"); }

void GroupState::begin_child() {
  std::lock_guard lock(mutex_);
  if (phase_ == Phase::joined) throw std::logic_error("TaskGroup::spawn: the group was joined already");
  ++running_;
}

void GroupState::child_failed(std::exception_ptr error, const CancellationToken* race) {
  if (race && error == race->exception()) return;  // A when_any loser, stopped by its race.
  {
    std::lock_guard lock(mutex_);
    if (first_error_) return;
    first_error_ = error;
  }
  if (policy_ == ChildFailure::cancel_group && !token_.is_cancelled()) {
    own_.cancel(std::make_exception_ptr(CancelledException("a child of the TaskGroup failed: " + describe(error))));
  }
}

void GroupState::child_settled() {
  std::unique_lock lock(mutex_);
  --running_;
  if (running_ == 0 && phase_ == Phase::joining) finish_join_locked(lock);
}

Future<void> GroupState::join() {
  std::unique_lock lock(mutex_);
  if (phase_ == Phase::open) {
    phase_ = Phase::joining;
    if (running_ == 0) finish_join_locked(lock);
  }
  return Future<void>(joined_);
}

void GroupState::finish_join_locked(std::unique_lock<std::mutex>& lock) {
  phase_ = Phase::joined;
  auto error = first_error_;
  lock.unlock();  // (join()'s continuations run with nothing held.)
  if (error) {
    joined_->set_exception(error);
  } else {
    joined_->set_value();
  }
}

std::size_t GroupState::running() const {
  std::lock_guard lock(mutex_);
  return running_;
}

}  // namespace cancellable::detail
