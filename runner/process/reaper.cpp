#include "runner/process/reaper.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <unordered_map>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include "cancellable/detail/library_thread.hpp"
#include "cancellable/executor.hpp"
#include "worker/protocol/result_channel.hpp"

namespace cancellable::detail {

namespace {

namespace asio = boost::asio;

// One Asio io_context on one thread. Each watch is a copy of the watched
// descriptor (its owner may close its own whenever it likes) waited on for
// readability: a pidfd is readable once its process has exited. The copy is
// closed as the watch ends (exit or stop_watching), on whichever thread.
//
// Why not boost::process::v2::process::async_wait: it reaps (waitpid) as
// soon as the pidfd is readable, and a worker's process group must be
// killed before the reap, while the unreaped leader still reserves the
// group id; nor does it report the child's resource usage.
class Reaper {
 public:
  Reaper() {
    try {
      io_ = std::make_unique<asio::io_context>(1);  // (its epoll and eventfd)
    } catch (const boost::system::system_error& e) {
      throw std::system_error(e.code().value(), std::generic_category(), "the process reaper's io_context");
    }
    work_.emplace(io_->get_executor());
    // The default executor's threads, first: a thread inherits the name of
    // the thread that starts it, and this one hands continuations to them.
    (void)default_executor();
    try {
      std::thread([this] {
        ::pthread_setname_np(::pthread_self(), "cancel-reaper");
        LibraryThreadScope library_thread;
        for (;;) {
          try {
            io_->run();
            return;  // (never: the work guard keeps it running)
          } catch (...) {
            // A handler threw: the handlers here do not, but the thread
            // that reaps every worker must not end.
          }
        }
      }).detach();
    } catch (const std::system_error& e) {
      throw std::system_error(e.code(), "the process reaper's thread");
    }
    // Result objects of a previous run that crashed before removing them.
    sweep_stale_result_shm();
  }

  std::uint64_t watch(std::shared_ptr<Reapable> child) {
    const int copy = ::fcntl(child->pidfd(), F_DUPFD_CLOEXEC, 0);
    if (copy < 0) throw std::system_error(errno, std::generic_category(), "the process reaper's copy of a pidfd");
    std::shared_ptr<Copy> descriptor;
    try {
      // (Registers the descriptor with the reactor: may fail, e.g. ENOMEM.)
      descriptor = std::make_shared<Copy>(*io_, copy);
    } catch (const boost::system::system_error& e) {
      ::close(copy);
      throw std::system_error(e.code().value(), std::generic_category(), "the process reaper's watch");
    } catch (const std::bad_alloc&) {
      ::close(copy);
      throw std::system_error(ENOMEM, std::generic_category(), "the process reaper's watch");
    }
    std::uint64_t id;
    {
      std::lock_guard lock(mutex_);
      id = ++last_id_;
      watches_.emplace(id, Watch{std::move(child), descriptor});
    }
    // The wait starts on the reaper's thread.
    try {
      asio::post(*io_, [this, id, descriptor] {
        std::lock_guard lock(descriptor->mutex);
        if (descriptor->closed) return;
        descriptor->fd.async_wait(asio::posix::stream_descriptor::wait_read,
                                  [this, id](const boost::system::error_code& ec) {
                                    if (!ec) exited(id);
                                  });
      });
    } catch (const std::bad_alloc&) {
      std::lock_guard lock(mutex_);
      watches_.erase(id);
      throw std::system_error(ENOMEM, std::generic_category(), "the process reaper's watch");
    }
    return id;
  }

  void unwatch(std::uint64_t id) noexcept {
    Watch watch;
    {
      std::lock_guard lock(mutex_);
      auto it = watches_.find(id);
      if (it == watches_.end()) return;
      watch = std::move(it->second);
      watches_.erase(it);
    }
    // Closed now: the watch holds nothing once this returns (a pending
    // wait ends with operation_aborted, and does nothing).
    watch.descriptor->close();
  }

 private:
  // The reaper's copy of a watched descriptor. Its mutex orders the start
  // of the wait (reaper thread) and the close (any thread).
  struct Copy {
    Copy(asio::io_context& io, int fd) : fd(io, fd) {}
    void close() noexcept {
      std::lock_guard lock(mutex);
      closed = true;
      boost::system::error_code ignored;
      fd.close(ignored);
    }
    std::mutex mutex;
    bool closed = false;
    asio::posix::stream_descriptor fd;
  };
  struct Watch {
    std::shared_ptr<Reapable> child;
    std::shared_ptr<Copy> descriptor;
  };

  // Reaper thread: the watched descriptor is readable.
  void exited(std::uint64_t id) {
    Watch watch;
    {
      std::lock_guard lock(mutex_);
      auto it = watches_.find(id);
      if (it == watches_.end()) return;  // unwatched meanwhile
      watch = std::move(it->second);
      watches_.erase(it);
    }
    watch.descriptor->close();
    watch.child->on_process_exit();
  }

  std::unique_ptr<asio::io_context> io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::mutex mutex_;
  std::uint64_t last_id_ = 0;
  std::unordered_map<std::uint64_t, Watch> watches_;
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
