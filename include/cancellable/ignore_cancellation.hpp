// ignore_cancellation: run an operation where being cancelled is a normal
// outcome, not an error.
//
// Who uses it: fire-and-forget work started from a UI or a request handler,
// where a CancelledException only means "nobody wants this any more".
//
// Order of events:
//   - success:             when_complete, then when_complete_or_cancelled;
//   - CancelledException
//     (or a subclass):     swallowed; when_complete is skipped;
//                          when_complete_or_cancelled runs;
//   - any other error:     on_error(error) if given, otherwise the returned
//                          future fails with that error; when_complete runs
//                          either way, then when_complete_or_cancelled.
// when_complete_or_cancelled always runs last. TimeoutException is not a
// CancelledException and is therefore not swallowed.
//
// The operation may return a value, void or a Future; a throw counts as an
// error. A callback that throws makes the returned future fail with that
// exception (the first one wins); later callbacks still run.
//
// Thread-safety: the callbacks run on the thread that completes the operation.
#pragma once

#include <exception>
#include <functional>
#include <memory>
#include <utility>

#include "cancellable/cancellable_future.hpp"
#include "cancellable/exceptions.hpp"
#include "cancellable/future.hpp"

namespace cancellable {

struct IgnoreCancellationCallbacks {
  std::function<void(std::exception_ptr)> on_error = nullptr;
  std::function<void()> when_complete = nullptr;
  std::function<void()> when_complete_or_cancelled = nullptr;
};

namespace detail {

inline bool is_cancelled_exception(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const CancelledException&) {
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace detail

template <class Operation>
Future<void> ignore_cancellation(Operation&& operation, IgnoreCancellationCallbacks callbacks = {}) {
  auto source = CancellableFuture::sync(std::forward<Operation>(operation));
  auto done = std::make_shared<detail::FutureState<void>>();
  auto src = source.state();
  src->subscribe([src, done, callbacks = std::move(callbacks)] {
    std::exception_ptr failure;
    auto call = [&failure](const auto& callback, auto&&... args) {
      if (!callback) return;
      try {
        callback(args...);
      } catch (...) {
        if (!failure) failure = std::current_exception();
      }
    };
    if (auto error = src->error()) {
      if (!detail::is_cancelled_exception(error)) {
        if (callbacks.on_error) {
          call(callbacks.on_error, error);
        } else {
          failure = error;
        }
        call(callbacks.when_complete);
      }
    } else {
      call(callbacks.when_complete);
    }
    call(callbacks.when_complete_or_cancelled);
    if (failure) {
      done->set_exception(failure);
    } else {
      done->set_value();
    }
  });
  return Future<void>(done);
}

}  // namespace cancellable
