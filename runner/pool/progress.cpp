// A pool task's progress: read from its worker's memory (the header every
// worker's memory starts with) while the task is posted there, kept once
// it ended; and the watch that calls TaskOptions::on_progress.
#include <utility>

#include "cancellable/executor.hpp"
#include "cancellable/detail/timer.hpp"
#include "runner/pool/pool_impl.hpp"

namespace cancellable::detail {

std::shared_ptr<PoolProgress> make_pool_progress() { return std::make_shared<PoolProgress>(); }

void watch_pool_progress(PoolProgress& progress, std::function<void(const Progress&)> on_progress,
                         std::chrono::milliseconds interval) {
  std::lock_guard lock(progress.mutex);
  progress.on_progress = std::move(on_progress);
  progress.interval = interval;
}

std::optional<Progress> read_pool_progress(const PoolProgress& progress) {
  std::lock_guard lock(progress.mutex);
  return progress.current_locked();
}

std::optional<Progress> PoolProgress::current_locked() const {
  if (worker) {
    // (The worker's memory lives as long as the Worker; a worker killed or
    // dead meanwhile leaves what it last wrote.)
    if (auto p = worker->memory->slot->read_progress()) return p;
  }
  return last;
}

void PoolProgress::attach(const std::shared_ptr<Worker>& on) {
  std::lock_guard lock(mutex);
  worker = on;
  if (on_progress) start_tick_locked();
}

std::function<void()> PoolProgress::detach() {
  std::lock_guard lock(mutex);
  if (!worker) return nullptr;
  last = current_locked();
  worker.reset();
  if (timer) timer->cancel();
  timer.reset();
  if (!on_progress || !last || last == reported) return nullptr;
  reported = last;
  return [report = on_progress, p = *last] { report(p); };
}

void PoolProgress::start_tick_locked() {
  std::weak_ptr<PoolProgress> weak = weak_from_this();
  timer = start_timer(interval, [weak] {
    if (auto self = weak.lock()) self->tick();
  });
}

// The timer's thread: hands a changed progress to the default executor.
void PoolProgress::tick() {
  std::function<void(const Progress&)> report;
  std::optional<Progress> p;
  {
    std::lock_guard lock(mutex);
    if (!worker) return;  // (the task ended: detach() reported the last)
    p = current_locked();
    if (p && p != reported) {
      reported = p;
      report = on_progress;
    }
    start_tick_locked();
  }
  if (report) default_executor().post([report, p = *p] { report(p); });
}

}  // namespace cancellable::detail
