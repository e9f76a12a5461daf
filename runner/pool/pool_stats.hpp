// The pool's statistics: the ring of recent samples its percentiles come
// from. (PoolImpl::stats(), in pool_stats.cpp, reads them with the counters.)
#pragma once

#include <chrono>
#include <cstddef>
#include <utility>
#include <vector>

namespace cancellable::detail {

// A ring of the last samples, for percentiles.
class Samples {
 public:
  void add(double us) {
    if (values_.size() < kKeep) {
      values_.push_back(us);
    } else {
      values_[next_] = us;
    }
    next_ = (next_ + 1) % kKeep;
  }
  std::pair<double, double> p50_p99() const;

 private:
  static constexpr std::size_t kKeep = 1024;
  std::vector<double> values_;
  std::size_t next_ = 0;
};

inline double us_since(std::chrono::steady_clock::time_point from, std::chrono::steady_clock::time_point to) {
  return std::chrono::duration<double, std::micro>(to - from).count();
}

}  // namespace cancellable::detail
