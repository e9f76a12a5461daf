// Internal: submitting a task to a worker pool, shared by WorkerPool::run
// (pool.hpp) and CancellableIsolate::run(task) with Backend::pool
// (isolate.hpp). Not part of the API.
#pragma once

#include <atomic>
#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "cancellable/cancellation_token.hpp"
#include "cancellable/detail/area_streambuf.hpp"
#include "cancellable/detail/completer_core.hpp"
#include "cancellable/detail/isolate_codec.hpp"
#include "cancellable/future.hpp"
#include "cancellable/isolate_options.hpp"
#include "cancellable/merged_cancellation_token.hpp"
#include "cancellable/pool_options.hpp"
#include "cancellable/stop_policy.hpp"
#include "cancellable/timeout_cancellation_token.hpp"

namespace cancellable {

class WorkerPool;
struct PoolStats;

namespace detail {

// A pool task's progress as its caller sees it (runner/pool/progress.cpp).
struct PoolProgress;
std::shared_ptr<PoolProgress> make_pool_progress();
// Calls on_progress (on the default executor) when the progress changes,
// checked every interval while the task runs. Before the task is submitted.
void watch_pool_progress(PoolProgress& progress, std::function<void(const Progress&)> on_progress,
                         std::chrono::milliseconds interval);
std::optional<Progress> read_pool_progress(const PoolProgress& progress);

// One queued or running task, type-erased (see runner/pool/).
struct PoolJob {
  std::string task_name;
  // Encodes the arguments into [area, area + capacity); returns the size,
  // or more than capacity if they do not fit.
  std::function<std::size_t(char* area, std::size_t capacity)> encode_args;
  // Decodes the result bytes and completes the future (may throw: the future
  // then fails with it).
  std::function<void(std::string_view)> deliver;
  std::function<void(std::exception_ptr)> fail;
  std::optional<std::chrono::seconds> cpu_time_limit;
  // The task's token (merged with its timeout): cancelled before a worker
  // takes the task, the task never starts; cancelled before its value is
  // delivered, the value is dropped.
  CancellationToken token;
  // The future's state (alive as long as the job): a thread blocked in its
  // get() takes the worker's answer itself, without a hop through the pool.
  FutureStateBase* state = nullptr;
  // Completed once nothing of the task runs any more (PoolRun::settled);
  // null when nobody asked.
  std::shared_ptr<CompleterCore<StopOutcome>> settled;
  // How a cancel stops the task while it runs (TaskOptions::stop, or the
  // pool's default when unset).
  std::optional<StopPolicy> stop;
  // The task's progress (PoolRun::progress, TaskOptions::on_progress); null
  // when nobody asked.
  std::shared_ptr<PoolProgress> progress;
};

class PoolImpl;

std::shared_ptr<PoolImpl> make_pool(PoolOptions options);
// Queues job; returns a handle the cancellation hook calls. Throws
// PoolQueueFull, PoolDegraded.
std::function<void()> submit_pool_job(const std::shared_ptr<PoolImpl>& pool, std::shared_ptr<PoolJob> job);
PoolStats pool_stats(const PoolImpl& pool);
std::size_t pool_size(const PoolImpl& pool) noexcept;
Future<void> pool_room(const std::shared_ptr<PoolImpl>& pool);
void stop_pool(PoolImpl& pool) noexcept;

// The pool behind a WorkerPool (for run(task) with Backend::pool, which
// does not need the whole of pool.hpp).
const std::shared_ptr<PoolImpl>& pool_impl_of(const WorkerPool& pool) noexcept;

// WorkerPool::run's body, for any encoding of the arguments and decoding of
// the answer: checks the options, fails at once if the token is cancelled
// already, queues the job and arms its cancellation. encode_args is
// PoolJob::encode_args; decode(bytes) returns the future's value (nothing for
// V = void) or throws (the future then fails with it).
template <class V, class Encode, class Decode>
Future<V> submit_pool_job_as(const std::shared_ptr<PoolImpl>& pool, const char* name, Encode encode_args,
                             Decode decode, CancellationToken token, TaskOptions options,
                             std::shared_ptr<CompleterCore<StopOutcome>> settled,
                             std::shared_ptr<PoolProgress> progress) {
  CancellationToken effective = token;
  if (options.timeout) effective = MergedCancellationToken{token, TimeoutCancellationToken(*options.timeout)};
  if (effective.is_cancelled()) {
    if (settled) settled->complete(StopOutcome::none);  // (nothing started)
    return make_failed_future<V>(effective.exception());
  }

  if (options.cpu_time_limit && options.cpu_time_limit->count() < 1) {
    throw std::invalid_argument("WorkerPool::run: TaskOptions::cpu_time_limit must be at least one second");
  }
  if (options.stop && options.stop->grace.count() < 0) {
    throw std::invalid_argument("WorkerPool::run: TaskOptions::stop's grace must not be negative");
  }
  if (options.on_progress && options.progress_interval.count() <= 0) {
    throw std::invalid_argument("WorkerPool::run: TaskOptions::progress_interval must be positive");
  }
  if (options.on_progress) {
    if (!progress) progress = make_pool_progress();
    watch_pool_progress(*progress, std::move(options.on_progress), options.progress_interval);
  }
  auto job = std::make_shared<PoolJob>();
  job->task_name = name;
  job->cpu_time_limit = options.cpu_time_limit;
  job->token = effective;
  job->encode_args = std::move(encode_args);
  // The job is cancelled through this handle (set once it is queued). One
  // allocation for the handle and its flag, and a hook small enough to be
  // held inside its std::function: run() is on the path of every task.
  struct CancelHook {
    std::function<void()> cancel;
    std::atomic<bool> ready{false};
  };
  auto hook = std::make_shared<CancelHook>();
  auto core = std::make_shared<CompleterCore<V>>(effective, nullptr, [hook] {
    if (hook->ready.load(std::memory_order_acquire)) hook->cancel();
  });
  if constexpr (std::is_empty_v<Decode> && std::is_default_constructible_v<Decode>) {
    job->deliver = [core](std::string_view bytes) {
      if constexpr (std::is_void_v<V>) {
        Decode{}(bytes);
        core->complete();
      } else {
        core->complete(Decode{}(bytes));
      }
    };
  } else {
    job->deliver = [core, decode = std::move(decode)](std::string_view bytes) {
      if constexpr (std::is_void_v<V>) {
        decode(bytes);
        core->complete();
      } else {
        core->complete(decode(bytes));
      }
    };
  }
  job->fail = [core](std::exception_ptr error) { core->complete_error(std::move(error)); };
  job->state = core->state().get();
  job->settled = std::move(settled);
  job->stop = options.stop;
  job->progress = std::move(progress);
  auto future = core->future();
  hook->cancel = submit_pool_job(pool, job);
  hook->ready.store(true, std::memory_order_release);
  // Cancelled between the token's check and the hook being armed: the
  // future failed already; take the job back now.
  if (core->was_cancelled()) hook->cancel();
  return future;
}

// WorkerPool::run's body: the arguments encoded, the result decoded, by the
// isolate codec.
template <class R, class Arguments>
Future<R> submit_pool_task(const std::shared_ptr<PoolImpl>& pool, const char* name, Arguments arguments,
                           CancellationToken token, TaskOptions options,
                           std::shared_ptr<CompleterCore<StopOutcome>> settled, std::shared_ptr<PoolProgress> progress) {
  auto encode = [arguments = std::move(arguments)](char* area, std::size_t capacity) {
    AreaStreambuf buffer(area, capacity);
    std::ostream out(&buffer);
    encode_result(arguments, out);
    out.flush();
    return buffer.total();
  };
  auto decode = [](std::string_view bytes) {
    if constexpr (!std::is_void_v<R>) return decode_result<R>(ResultView{bytes.data(), bytes.size()});
  };
  return submit_pool_job_as<R>(pool, name, std::move(encode), std::move(decode), std::move(token),
                               std::move(options), std::move(settled), std::move(progress));
}

}  // namespace detail

}  // namespace cancellable
