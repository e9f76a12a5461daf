// The reaper: one thread that watches every isolate child through its pidfd
// (epoll) and reaps it as soon as it exits, so no zombie remains. It never runs
// user code: what follows a reap is handed to the default executor.
#pragma once

#include <memory>

namespace cancellable::detail {

// What the reaper watches.
class Reapable {
 public:
  virtual ~Reapable() = default;
  virtual int pidfd() const noexcept = 0;
  // Called on the reaper thread once the process has exited: reap it and
  // hand on the rest. Must not block.
  virtual void on_process_exit() noexcept = 0;
};

// Watches child until it exits. Keeps it alive until then.
void reap_when_exited(std::shared_ptr<Reapable> child);

}  // namespace cancellable::detail
