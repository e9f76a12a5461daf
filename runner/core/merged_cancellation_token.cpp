#include "cancellable/merged_cancellation_token.hpp"

#include <memory>
#include <mutex>
#include <vector>

#include "cancellable/cancellable_base.hpp"
#include "runner/core/token_state.hpp"

namespace cancellable {

namespace {

class MergedState;

// What a merged token attaches to each of its tokens.
class ParentLink final : public Cancellable {
 public:
  explicit ParentLink(MergedState& merged) : merged_(merged) {}
  ~ParentLink() override { detach(); }

 private:
  void on_cancel(std::exception_ptr exception) override;
  MergedState& merged_;
};

class MergedState final : public detail::TokenState {
 public:
  explicit MergedState(std::vector<CancellationToken> tokens) : tokens_(std::move(tokens)) {
    links_.reserve(tokens_.size());
    for (std::size_t i = 0; i < tokens_.size(); ++i) {
      links_.push_back(std::make_unique<ParentLink>(*this));
    }
    // Cancelled at construction if a token already is: the first one in list
    // order gives the exception.
    if (auto exception = observed_parent_exception()) cancel(exception);
  }

  ~MergedState() override {
    // A token may be cancelling on another thread right now, its link's
    // on_cancel reaching into this state (and iterating links_). Detach every
    // link first, each detach waiting for such a call to return; only then
    // may links and members go. (No lock here: that on_cancel takes
    // links_mutex_.)
    for (auto& link : links_) link->detach();
  }

  bool is_cancelled() const noexcept override {
    if (own_cancelled()) return true;
    for (const auto& token : tokens_) {
      if (token.is_cancelled()) return true;
    }
    return false;
  }

  std::exception_ptr exception() const noexcept override {
    if (auto own = own_exception()) return own;
    return observed_parent_exception();
  }

  // Its own cancel(): a merged token already cancelled by one of its tokens
  // keeps that exception, and the call returns false (it cancelled nothing).
  bool request_cancel(std::exception_ptr exception) override {
    if (auto parent = observed_parent_exception()) {
      cancel(std::move(parent));
      return false;
    }
    return cancel(std::move(exception));
  }

  // A token it merges was cancelled with exception (its link's on_cancel, or
  // an attach that found it cancelled). The first exception observed stays.
  void parent_cancelled(std::exception_ptr exception) {
    {
      std::lock_guard lock(observed_mutex_);
      if (!observed_) observed_ = std::move(exception);
      exception = observed_;
    }
    cancel(std::move(exception));
  }

  std::stop_token stop_token() override {
    {
      std::lock_guard lock(links_mutex_);
      keep_linked_ = true;
    }
    sync_links();
    return TokenState::stop_token();
  }

 private:
  void on_first_attach() override { sync_links(); }
  void on_last_detach() override { sync_links(); }
  void on_cancelled() override {
    std::lock_guard lock(links_mutex_);
    detach_links_locked();
  }

  // The exception of a cancelled token it merges, as first observed: with
  // nothing attached, the first cancelled one in list order at the first
  // read; it never changes afterwards (a later read, or work started later,
  // sees the same exception).
  std::exception_ptr observed_parent_exception() const noexcept {
    std::lock_guard lock(observed_mutex_);
    if (!observed_) {
      for (const auto& token : tokens_) {
        if (auto exception = token.exception()) {
          observed_ = exception;
          break;
        }
      }
    }
    return observed_;
  }

  // Attaches the links while something needs them (own cancellables, or a
  // stop_token handed out), detaches them otherwise. Runs no user code under
  // links_mutex_: links are attached through the token, which does not
  // notify, and a token found cancelled cancels this one after the lock is
  // released. Link detaches under the lock do not wait for a link's
  // on_cancel running elsewhere, since that call takes the lock too.
  void sync_links() {
    std::exception_ptr cancelled_parent;
    {
      std::lock_guard lock(links_mutex_);
      const bool want = !own_cancelled() && (keep_linked_ || has_cancellables());
      if (want && !linked_) {
        linked_ = true;
        for (std::size_t i = 0; i < tokens_.size(); ++i) {
          if (!tokens_[i].attach_cancellable(*links_[i])) {
            cancelled_parent = tokens_[i].exception();
            break;
          }
        }
      } else if (!want && linked_) {
        detach_links_locked();
      }
    }
    // A cancellation that ran while the links were being attached detaches
    // them in on_cancelled(), which waited for the lock.
    if (cancelled_parent) parent_cancelled(std::move(cancelled_parent));
  }

  void detach_links_locked() {
    for (auto& link : links_) TokenState::detach_without_waiting(*link);
    linked_ = false;
  }

  friend class ParentLink;
  const std::vector<CancellationToken> tokens_;
  std::vector<std::unique_ptr<ParentLink>> links_;
  std::mutex links_mutex_;  // guards linking and unlinking, never held while user code runs
  bool linked_ = false;
  bool keep_linked_ = false;
  mutable std::mutex observed_mutex_;
  mutable std::exception_ptr observed_;
};

void ParentLink::on_cancel(std::exception_ptr exception) { merged_.parent_cancelled(std::move(exception)); }

}  // namespace

MergedCancellationToken::MergedCancellationToken(std::vector<CancellationToken> tokens)
    : CancellationToken(std::make_shared<MergedState>(std::move(tokens))) {}

}  // namespace cancellable
