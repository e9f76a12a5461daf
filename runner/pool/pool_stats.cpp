// The pool's statistics.
#include <algorithm>
#include <cmath>

#include "runner/pool/pool_impl.hpp"

namespace cancellable::detail {

std::pair<double, double> Samples::p50_p99() const {
  if (values_.empty()) return {0, 0};
  std::vector<double> sorted = values_;
  std::sort(sorted.begin(), sorted.end());
  const auto rank = [&](double p) {
    const auto i = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
    return sorted[std::min(sorted.size() - 1, i == 0 ? 0 : i - 1)];
  };
  return {rank(0.50), rank(0.99)};
}


PoolStats PoolImpl::stats() const {
  std::lock_guard lock(mutex_);
  PoolStats s = stats_;
  // (Tasks cancelled while queued wait for the sweep in the queue: not counted.)
  s.queued = static_cast<std::size_t>(std::count_if(
      queue_.begin(), queue_.end(), [](const auto& e) { return !e->job->token.is_cancelled(); }));
  for (const auto& w : workers_) {
    if (w->state == Worker::State::starting) ++s.starting;
    if (w->state == Worker::State::idle) ++s.idle;
    if (w->state == Worker::State::busy) ++s.busy;
    if (w->state == Worker::State::stopping) ++s.stopping;
  }
  std::tie(s.queue_wait_p50_us, s.queue_wait_p99_us) = queue_wait_.p50_p99();
  std::tie(s.run_time_p50_us, s.run_time_p99_us) = run_time_.p50_p99();
  return s;
}

}  // namespace cancellable::detail
