#include "runner/reaper.hpp"

#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_map>

#include "cancellable/detail/library_thread.hpp"
#include "worker/protocol/result_channel.hpp"

namespace cancellable::detail {

namespace {

class Reaper {
 public:
  Reaper() : epoll_(::epoll_create1(EPOLL_CLOEXEC)) {
    if (epoll_ < 0) {
      throw std::system_error(errno, std::generic_category(), "CancellableIsolate: the reaper's epoll_create1");
    }
    try {
      std::thread([this] { loop(); }).detach();
    } catch (...) {
      ::close(epoll_);
      throw;
    }
    // Result objects of a previous run that crashed before removing them.
    sweep_stale_result_shm();
  }

  std::uint64_t watch(std::shared_ptr<Reapable> child) {
    const int fd = child->pidfd();
    std::lock_guard lock(mutex_);
    const std::uint64_t id = ++last_id_;
    // Events carry the id, not the fd: an fd number closed by a thread that
    // reaped its own child may be reused before a stale event is handled.
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = id;
    if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &event) != 0) {
      throw std::system_error(errno, std::generic_category(), "epoll_ctl");
    }
    children_.emplace(id, std::move(child));
    return id;
  }

  void unwatch(std::uint64_t id) noexcept {
    std::shared_ptr<Reapable> child;
    std::lock_guard lock(mutex_);
    auto it = children_.find(id);
    if (it == children_.end()) return;
    child = std::move(it->second);
    children_.erase(it);
    // Under the lock, while the pidfd is still open: see loop().
    ::epoll_ctl(epoll_, EPOLL_CTL_DEL, child->pidfd(), nullptr);
  }

 private:
  void loop() {
    LibraryThreadScope library_thread;
    epoll_event events[64];
    for (;;) {
      const int n = ::epoll_wait(epoll_, events, 64, -1);
      if (n < 0) continue;  // EINTR
      for (int i = 0; i < n; ++i) {
        std::shared_ptr<Reapable> child;
        {
          std::lock_guard lock(mutex_);
          auto it = children_.find(events[i].data.u64);
          if (it == children_.end()) continue;  // unwatched meanwhile
          child = std::move(it->second);
          children_.erase(it);
          // Whoever removes a child from the map removes its pidfd from the
          // epoll set, under the lock: the owner closes the pidfd only after
          // unwatch() returned, so the fd number cannot be someone else's yet.
          ::epoll_ctl(epoll_, EPOLL_CTL_DEL, child->pidfd(), nullptr);
        }
        child->on_process_exit();
      }
    }
  }

  const int epoll_;
  std::mutex mutex_;
  std::uint64_t last_id_ = 0;
  std::unordered_map<std::uint64_t, std::shared_ptr<Reapable>> children_;
};

Reaper& reaper() {
  // Never destroyed: children may still be running while statics are destroyed.
  static auto* instance = new Reaper();
  return *instance;
}

}  // namespace

void ensure_reaper_started() { (void)reaper(); }

std::uint64_t reap_when_exited(std::shared_ptr<Reapable> child) { return reaper().watch(std::move(child)); }

void stop_watching(std::uint64_t id) noexcept { reaper().unwatch(id); }

}  // namespace cancellable::detail
