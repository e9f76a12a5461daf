#include "cancellable/isolate.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <mutex>
#include <stop_token>
#include <system_error>
#include <thread>
#include <vector>

#include "cancellable/exceptions.hpp"
#include "support/progress_support.hpp"
#include "support/test_support.hpp"
#include "worker/test_seams.hpp"

using namespace cancellable;
using namespace std::chrono_literals;
using test_support::Event;

namespace {

pid_t refuse_with_eagain() {
  errno = EAGAIN;
  return -1;
}
pid_t refuse_with_enosys() {
  errno = ENOSYS;
  return -1;
}
pid_t refuse_with_eperm() {
  errno = EPERM;
  return -1;
}

// Restores the real fork() when the test ends, even if it fails.
struct ForkSeam {
  explicit ForkSeam(detail::ForkFunction f) { detail::set_fork_function(f); }
  ~ForkSeam() { detail::set_fork_function(nullptr); }
};

}  // namespace

TEST_CASE("when fork is refused the work runs on a thread", "[isolate][fallback]") {
  auto refuse = GENERATE(refuse_with_eagain, refuse_with_enosys);
  ForkSeam seam(refuse);
  auto isolate = CancellableIsolate::spawn([] { return ::getpid(); });
  CHECK(isolate.future().get() == ::getpid());
  CHECK(isolate.backend() == Backend::thread);
}

TEST_CASE("with the process backend forced, a refused fork fails with std::system_error",
          "[isolate][fallback]") {
  ForkSeam seam(refuse_with_eagain);
  IsolateOptions options;
  options.backend = Backend::process;
  auto f = CancellableIsolate::run([] { return 1; }, CancellationToken::none(), options);
  try {
    (void)f.get();
    FAIL("expected std::system_error");
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::errc::resource_unavailable_try_again);
  }
}

TEST_CASE("a fork refused for another reason fails the run", "[isolate][fallback]") {
  ForkSeam seam(refuse_with_eperm);
  auto f = CancellableIsolate::run([] { return 1; });
  CHECK_THROWS_AS(f.get(), std::system_error);
}

TEST_CASE("progress reported in a worker process reaches the caller", "[isolate][progress]") {
  // (The thread backend's: isolate_thread_test.cpp.)
  test_support::check_progress_reaches_caller(Backend::process);
}

TEST_CASE("report_progress outside an isolate does nothing", "[isolate][progress]") {
  CHECK_NOTHROW(cancellable::report_progress(1, 2, "nowhere"));
}
