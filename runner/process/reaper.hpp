// The reaper: one thread (an Asio io_context) that watches every worker
// process, of isolates and of pools alike, through its pidfd, and calls its
// owner back as soon as it has exited, so no zombie remains. It never runs
// user code: a future completed there hands its continuations to the
// default executor (it is a library thread).
#pragma once

#include <cstdint>
#include <memory>

namespace cancellable::detail {

// What the reaper watches.
class Reapable {
 public:
  virtual ~Reapable() = default;
  virtual int pidfd() const noexcept = 0;
  // Called on the reaper thread once the process has exited: reap it and
  // hand on the rest (or do nothing if another thread has taken the reap
  // over). Must not block.
  virtual void on_process_exit() noexcept = 0;
};

// Starts the reaper (its epoll descriptor and thread) if it is not running.
// Throws std::system_error if it cannot (no descriptor, no thread); call it
// before forking a child that it must watch.
void ensure_reaper_started();

// Watches child until it exits (or until stop_watching). Keeps it alive until
// then. Returns the watch's id.
std::uint64_t reap_when_exited(std::shared_ptr<Reapable> child);

// The reaper forgets the watch; on_process_exit may still run once if the
// reaper already took the watch's event. (The reaper waits on a copy of the
// descriptor: its owner may close its own at any time.)
void stop_watching(std::uint64_t id) noexcept;

}  // namespace cancellable::detail
