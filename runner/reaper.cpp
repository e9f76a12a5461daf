#include "runner/reaper.hpp"

#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_map>

#include "cancellable/detail/library_thread.hpp"
#include "runner/result_channel.hpp"

namespace cancellable::detail {

namespace {

class Reaper {
 public:
  Reaper() : epoll_(::epoll_create1(EPOLL_CLOEXEC)) {
    if (epoll_ < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
    // Result objects of a previous run that crashed before removing them.
    sweep_stale_result_shm();
    std::thread([this] { loop(); }).detach();
  }

  void watch(std::shared_ptr<Reapable> child) {
    const int fd = child->pidfd();
    {
      std::lock_guard lock(mutex_);
      children_[fd] = std::move(child);
    }
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.fd = fd;
    if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &event) != 0) {
      const int error = errno;
      std::lock_guard lock(mutex_);
      children_.erase(fd);
      throw std::system_error(error, std::generic_category(), "epoll_ctl");
    }
  }

 private:
  void loop() {
    LibraryThreadScope library_thread;
    epoll_event events[64];
    for (;;) {
      const int n = ::epoll_wait(epoll_, events, 64, -1);
      if (n < 0) continue;  // EINTR
      for (int i = 0; i < n; ++i) {
        const int fd = events[i].data.fd;
        std::shared_ptr<Reapable> child;
        {
          std::lock_guard lock(mutex_);
          auto it = children_.find(fd);
          if (it == children_.end()) continue;
          child = std::move(it->second);
          children_.erase(it);
        }
        ::epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
        child->on_process_exit();  // closes the pidfd
      }
    }
  }

  const int epoll_;
  std::mutex mutex_;
  std::unordered_map<int, std::shared_ptr<Reapable>> children_;
};

Reaper& reaper() {
  // Never destroyed: children may still be running while statics are destroyed.
  static auto* instance = new Reaper();
  return *instance;
}

}  // namespace

void reap_when_exited(std::shared_ptr<Reapable> child) { reaper().watch(std::move(child)); }

}  // namespace cancellable::detail
