// Executor: where continuations and CancellableFuture::from computations run.
//
// default_executor() is a Boost.Asio thread_pool with
// max(2, std::thread::hardware_concurrency()) threads, created on first use and
// deliberately never destroyed (work may still be queued while static objects
// are destroyed at exit). Microtasks (CancellableFuture::microtask) are taken
// before ordinary work.
//
// Gotcha: a computation on the default executor that blocks in Future::get()
// on other work for the same executor can deadlock once every thread blocks.
//
// Thread-safety: post() may be called from any thread.
#pragma once

#include <cstddef>
#include <functional>

namespace cancellable {

class Executor {
 public:
  virtual ~Executor() = default;
  // Runs work later on one of the executor's threads. work must not throw.
  virtual void post(std::function<void()> work) = 0;
};

// The executor used by CancellableFuture::from and for continuations that the
// library's own threads hand off.
Executor& default_executor();

namespace detail {
// Queues work on the default executor ahead of every ordinary post().
void post_microtask(std::function<void()> work);
}  // namespace detail

}  // namespace cancellable
