// The umbrella header compiles on its own and brings in the whole API.
#include "cancellable/cancellable.hpp"

#include <catch2/catch.hpp>

using namespace cancellable;
using namespace std::chrono_literals;

TEST_CASE("the umbrella header exposes every public type", "[umbrella]") {
  CancellationToken token;
  TimeoutCancellationToken timeout(1h);
  MergedCancellationToken merged{token, timeout};
  CancellableCompleter<int> completer(merged);
  auto f = CancellableFuture::value(completer.future(), merged);
  auto ignored = ignore_cancellation([&] { return f; });
  token.cancel();
  CHECK_THROWS_AS(f.get(), CancelledException);
  CHECK_NOTHROW(ignored.get());
  CHECK_FALSE(timeout.has_cancellables());
}
