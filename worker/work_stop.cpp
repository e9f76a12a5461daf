// work_stop_token(): the work's side of a graded stop (see work_stop.hpp).
//
// In a worker process the token is made on the first call of a run, and
// one watcher thread (started by that first call, for the life of the
// process) sleeps on the stop word (a futex in the shared memory) and
// cancels the current run's token when the word holds that run's number.
// The watcher's stack is small and made with mmap: it counts little against
// a memory limit (RLIMIT_DATA).
#include "worker/work_stop.hpp"

#include <pthread.h>

#include <atomic>
#include <mutex>
#include <optional>

#include "cancellable/stop_policy.hpp"
#include "worker/protocol/futex.hpp"

namespace cancellable {
namespace detail {
namespace {

struct ProcessWork {
  std::mutex mutex;
  WorkerHeader* header = nullptr;
  std::uint32_t run = 0;
  std::optional<CancellationToken> token;  // made on first use in a run
  bool watching = false;
};

// Made by the first begin_process_work, in the worker process (never in
// the parent: a forked child must not inherit its mutex, perhaps held by
// another thread at the fork). Never destroyed: the watcher uses it until
// the process exits.
std::atomic<ProcessWork*> process_work{nullptr};

thread_local std::optional<CancellationToken> thread_work_token;

void* watch_stop_word(void*) {
  ProcessWork& work = *process_work.load(std::memory_order_acquire);
  for (;;) {
    WorkerHeader* header;
    std::uint32_t run;
    std::optional<CancellationToken> token;
    {
      std::lock_guard lock(work.mutex);
      header = work.header;
      run = work.run;
      token = work.token;
    }
    const std::uint32_t seen = header->stop.load(std::memory_order_acquire);
    if (seen != 0 && seen == run && token) token->cancel();
    // Sleeps until the parent writes the word again (a later run's stop).
    futex_wait(header->stop, seen);
  }
}

// Starts the watcher once; false if no thread could be made (the token is
// then cancelled by nobody: the grace runs out and the worker is killed).
bool start_watcher_locked(ProcessWork& work) {
  if (work.watching) return true;
  pthread_attr_t attr;
  if (::pthread_attr_init(&attr) != 0) return false;
  ::pthread_attr_setstacksize(&attr, 64 * 1024);
  ::pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t thread;
  work.watching = ::pthread_create(&thread, &attr, &watch_stop_word, nullptr) == 0;
  ::pthread_attr_destroy(&attr);
  if (work.watching) ::pthread_setname_np(thread, "cancel-stop");
  return work.watching;
}

}  // namespace

void begin_process_work(WorkerHeader* header, std::uint32_t run) noexcept {
  // (The first call comes before the work runs, on the worker's only thread.)
  if (!process_work.load(std::memory_order_acquire)) process_work.store(new ProcessWork, std::memory_order_release);
  ProcessWork& work = *process_work.load(std::memory_order_acquire);
  std::optional<CancellationToken> previous;
  {
    std::lock_guard lock(work.mutex);
    work.header = header;
    work.run = run;
    previous = std::move(work.token);  // (released below, unlocked)
    work.token.reset();
  }
}

ThreadWorkScope::ThreadWorkScope(CancellationToken token) noexcept : previous_(std::move(thread_work_token)) {
  thread_work_token = std::move(token);
}

ThreadWorkScope::~ThreadWorkScope() { thread_work_token = std::move(previous_); }

}  // namespace detail

const char* to_string(StopOutcome outcome) noexcept {
  switch (outcome) {
    case StopOutcome::none: return "none";
    case StopOutcome::killed: return "killed";
    case StopOutcome::stopped: return "stopped";
    case StopOutcome::killed_after_grace: return "killed after grace";
    case StopOutcome::abandoned_after_grace: return "abandoned after grace";
  }
  return "unknown";
}

CancellationToken work_stop_token() {
  if (detail::thread_work_token) return *detail::thread_work_token;
  detail::ProcessWork* in_process = detail::process_work.load(std::memory_order_acquire);
  if (!in_process) return CancellationToken::none();
  detail::ProcessWork& work = *in_process;
  CancellationToken token;
  {
    std::lock_guard lock(work.mutex);
    if (!work.header) return CancellationToken::none();
    if (!work.token) {
      work.token = CancellationToken();
      detail::start_watcher_locked(work);
    }
    token = *work.token;
    // Asked before the token existed (or before the watcher ran).
    if (work.header->stop.load(std::memory_order_acquire) != work.run) return token;
  }
  token.cancel();
  return token;
}

}  // namespace cancellable
