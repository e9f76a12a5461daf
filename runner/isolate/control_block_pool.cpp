#include "runner/isolate/control_block_pool.hpp"

#include <mutex>
#include <utility>
#include <vector>

#include <boost/interprocess/anonymous_shared_memory.hpp>

#include "worker/protocol/control_block.hpp"

namespace cancellable::detail {

namespace {

struct Idle {
  static constexpr std::size_t kMax = 8;
  std::mutex mutex;
  std::vector<ControlRegion> regions;
};

Idle& idle() {
  static auto* pool = new Idle();  // never destroyed: used until exit
  return *pool;
}

}  // namespace

ControlRegion acquire_control_region() {
  {
    auto& pool = idle();
    std::lock_guard lock(pool.mutex);
    if (!pool.regions.empty()) {
      ControlRegion region = std::move(pool.regions.back());
      pool.regions.pop_back();
      return region;
    }
  }
  return std::make_unique<boost::interprocess::mapped_region>(
      boost::interprocess::anonymous_shared_memory(ControlBlock::kSize));
}

void give_back_control_region(ControlRegion region) noexcept {
  if (!region) return;
  try {
    auto& pool = idle();
    std::lock_guard lock(pool.mutex);
    if (pool.regions.size() < Idle::kMax) {
      pool.regions.push_back(std::move(region));
      return;
    }
  } catch (...) {
  }
  // Unmapped here, outside the lock.
}

}  // namespace cancellable::detail
