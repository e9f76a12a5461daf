#include "cancellable/merged_cancellation_token.hpp"

#include <memory>
#include <mutex>
#include <vector>

#include "cancellable/cancellable_base.hpp"
#include "runner/token_state.hpp"

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
    if (auto exception = first_cancelled_parent_exception()) cancel(exception);
  }

  ~MergedState() override {
    // Detach every link (waiting for any running on_cancel) before members die.
    links_.clear();
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
    return first_cancelled_parent_exception();
  }

  // Its own cancel(): a token that is already cancelled keeps its exception.
  bool request_cancel(std::exception_ptr exception) override {
    if (auto parent = first_cancelled_parent_exception()) exception = parent;
    return cancel(std::move(exception));
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
  void on_cancelled() override { detach_links(); }

  std::exception_ptr first_cancelled_parent_exception() const noexcept {
    for (const auto& token : tokens_) {
      if (auto exception = token.exception()) return exception;
    }
    return nullptr;
  }

  // Attaches the links while something needs them (own cancellables, or a
  // stop_token handed out), detaches them otherwise. Never called on the
  // cancellation path, which only detaches (on_cancelled).
  void sync_links() {
    std::lock_guard lock(links_mutex_);
    const bool want = !own_cancelled() && (keep_linked_ || has_cancellables());
    if (want && !linked_) {
      for (std::size_t i = 0; i < tokens_.size(); ++i) {
        // A cancelled parent notifies the link inline, which cancels us.
        links_[i]->maybe_attach(tokens_[i]);
      }
      linked_ = true;
      // A cancellation that ran while we were attaching may have missed the
      // links attached after it: detach them now.
      if (own_cancelled()) detach_links();
    } else if (!want && linked_) {
      detach_links();
      linked_ = false;
    }
  }

  void detach_links() {
    for (auto& link : links_) link->detach();
  }

  friend class ParentLink;
  const std::vector<CancellationToken> tokens_;
  std::vector<std::unique_ptr<ParentLink>> links_;
  std::mutex links_mutex_;
  bool linked_ = false;
  bool keep_linked_ = false;
};

void ParentLink::on_cancel(std::exception_ptr exception) { merged_.cancel(std::move(exception)); }

}  // namespace

MergedCancellationToken::MergedCancellationToken(std::vector<CancellationToken> tokens)
    : CancellationToken(std::make_shared<MergedState>(std::move(tokens))) {}

}  // namespace cancellable
