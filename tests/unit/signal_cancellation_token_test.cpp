#include "cancellable/signal_cancellation_token.hpp"

#include <catch2/catch.hpp>

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stdexcept>
#include <string>

#include "cancellable/cancellable_completer.hpp"
#include "cancellable/exceptions.hpp"
#include "support/test_support.hpp"

extern char** environ;

using namespace cancellable;

namespace {

SignalOptions on(std::vector<int> signals, bool restore) {
  SignalOptions options;
  options.signals = std::move(signals);
  options.restore_default_after_first = restore;
  return options;
}

// The exception a future attached to token failed with, once it has.
std::exception_ptr failure_when_cancelled(const CancellationToken& token) {
  CancellableCompleter<int> completer(token);
  return test_support::failure_of(completer.future());
}

std::string reason_of(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const CancelledException& e) {
    return e.reason().value_or("");
  } catch (...) {
    return "not a CancelledException";
  }
}

}  // namespace

TEST_CASE("a signal token is cancelled by its signal, which it names", "[signal]") {
  SignalCancellationToken token(on({SIGUSR1}, false));
  CHECK_FALSE(token.is_cancelled());
  CHECK(token.signal() == 0);
  CancellableCompleter<int> completer(token);
  ::kill(::getpid(), SIGUSR1);
  const auto error = test_support::failure_of(completer.future());
  CHECK(reason_of(error) == "interrupted by SIGUSR1");
  CHECK(token.is_cancelled());
  CHECK(token.signal() == SIGUSR1);
}

TEST_CASE("every signal token watching a signal is cancelled, others are not", "[signal]") {
  SignalCancellationToken first(on({SIGUSR2}, false));
  SignalCancellationToken second(on({SIGUSR2, SIGUSR1}, false));
  SignalCancellationToken other(on({SIGUSR1}, false));
  ::kill(::getpid(), SIGUSR2);
  CHECK(reason_of(failure_when_cancelled(first)) == "interrupted by SIGUSR2");
  CHECK(reason_of(failure_when_cancelled(second)) == "interrupted by SIGUSR2");
  CHECK(second.signal() == SIGUSR2);
  CHECK_FALSE(other.is_cancelled());
  CHECK(other.signal() == 0);
}

TEST_CASE("a signal token cancelled otherwise reports no signal", "[signal]") {
  SignalCancellationToken token(on({SIGUSR1}, false));
  token.cancel();
  CHECK(token.is_cancelled());
  CHECK(token.signal() == 0);
}

TEST_CASE("signals that cannot be caught are refused", "[signal]") {
  CHECK_THROWS_AS(SignalCancellationToken(on({SIGKILL}, false)), std::invalid_argument);
  CHECK_THROWS_AS(SignalCancellationToken(on({SIGSTOP}, false)), std::invalid_argument);
  CHECK_THROWS_AS(SignalCancellationToken(on({0}, false)), std::invalid_argument);
  CHECK_THROWS_AS(SignalCancellationToken(on({}, false)), std::invalid_argument);
}

TEST_CASE("after the first signal, the default action is restored for a second one", "[signal]") {
  // In a fresh process (the helper): the first SIGTERM cancels its token,
  // the second ends it the default way.
  char mode[] = "second-signal";
  char* argv[] = {const_cast<char*>(CANCELLABLE_ISOLATE_PARENT_HELPER), mode, nullptr};
  pid_t child = 0;
  REQUIRE(::posix_spawn(&child, argv[0], nullptr, nullptr, argv, environ) == 0);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  INFO("exit code " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1));
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGTERM);
}
