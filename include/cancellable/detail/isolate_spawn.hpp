// Internal: the body of CancellableIsolate::spawn (isolate.hpp), kept out
// of the public header. Isolate<R> is complete wherever this is used.
#pragma once

#include <exception>
#include <memory>
#include <stop_token>
#include <type_traits>
#include <utility>

#include "cancellable/cancellation_token.hpp"
#include "cancellable/detail/completer_core.hpp"
#include "cancellable/detail/isolate_codec.hpp"
#include "cancellable/detail/isolate_runtime.hpp"
#include "cancellable/future.hpp"
#include "cancellable/isolate_options.hpp"
#include "cancellable/merged_cancellation_token.hpp"
#include "cancellable/stop_policy.hpp"
#include "cancellable/timeout_cancellation_token.hpp"

namespace cancellable {

template <class R>
class Isolate;

namespace detail {

template <class F>
decltype(auto) invoke_isolate_fn(F& fn, const std::stop_token& stop) {
  if constexpr (std::is_invocable_v<F&, std::stop_token>) {
    return fn(stop);
  } else {
    return fn();
  }
}

template <class F>
using isolate_result_t =
    std::conditional_t<std::is_invocable_v<F&, std::stop_token>,
                       std::invoke_result<F&, std::stop_token>, std::invoke_result<F&>>;

// CancellableIsolate::spawn, with memory the worker writes into, and whether
// the outcome may be delivered before the worker's exit (see LaunchSpec).
template <class R, class F>
Isolate<R> spawn_isolate(F&& fn, const CancellationToken& token, IsolateOptions options,
                         std::shared_ptr<void> worker_memory, bool deliver_at_commit = false) {
  static_assert(!is_future_v<R>, "an isolate's work must return a value, not a Future");
  validate_isolate_options(options);
  CancellationToken effective = token;
  if (options.timeout) {
    effective = MergedCancellationToken{token, TimeoutCancellationToken(*options.timeout)};
  }
  if (effective.is_cancelled()) {
    return Isolate<R>(make_failed_future<R>(effective.exception()), nullptr);
  }
  auto record = make_isolate_record();
  auto core = std::make_shared<CompleterCore<R>>(effective, nullptr, [record] { record->cancel_work(); });
  Isolate<R> isolate(core->future(), record);
  // Even when the token was cancelled since the check above (the future has
  // failed, and the record was killed), the record is started: it then
  // starts nothing and completes exited() at once.

  auto work = std::make_shared<std::decay_t<F>>(std::forward<F>(fn));
  LaunchSpec spec;
  const bool graded = options.stop.grace.count() > 0;
  spec.options = std::move(options);
  spec.token = effective;
  spec.child_body = [work, graded](ChildChannel& channel) {
    // Without a grace the worker is never asked to stop: it is killed.
    const std::stop_token stop = graded ? work_stop_token().stop_token() : std::stop_token();
    if constexpr (std::is_void_v<R>) {
      invoke_isolate_fn(*work, stop);
    } else {
      encode_result<R>(invoke_isolate_fn(*work, stop), channel.result_stream());
    }
    channel.commit_result();
  };
  spec.thread_body = [work, core](std::stop_token stop) {
    complete_core_with(core, [&]() -> decltype(auto) { return invoke_isolate_fn(*work, stop); });
  };
  spec.deliver = [core](ResultView view) {
    if constexpr (std::is_void_v<R>) {
      core->complete();
    } else {
      core->complete(decode_result<R>(view));
    }
  };
  if constexpr (std::is_void_v<R>) {
    spec.deliver_is_trivial = true;
  } else {
    spec.deliver_is_trivial = raw_copyable_v<R>;
  }
  spec.fail = [core](std::exception_ptr error) { core->complete_error(std::move(error)); };
  spec.worker_memory = std::move(worker_memory);
  spec.deliver_at_commit = deliver_at_commit;
  isolate.future().state()->set_wait_helper(record);
  start_isolate(record, std::move(spec));
  return isolate;
}

}  // namespace detail

}  // namespace cancellable
