#include "cancellable/exceptions.hpp"

#include <catch2/catch.hpp>

#include <string>

using namespace cancellable;
using namespace std::chrono_literals;

TEST_CASE("a CancelledException has the default text of the Dart package", "[exceptions]") {
  CancelledException e;
  CHECK(std::string(e.what()) ==
        "CancelledException: The operation was cancelled by a CancellationToken.");
  CHECK_FALSE(e.reason().has_value());
}

TEST_CASE("a CancelledException with a reason appends it and returns it", "[exceptions]") {
  CancelledException e("user left");
  CHECK(std::string(e.what()) ==
        "CancelledException: The operation was cancelled by a CancellationToken. (reason: user left)");
  REQUIRE(e.reason().has_value());
  CHECK(*e.reason() == "user left");
}

TEST_CASE("a TimeoutException carries its duration and is not a CancelledException",
          "[exceptions]") {
  TimeoutException e(250ms);
  CHECK(e.timeout() == 250ms);
  CHECK(std::string(e.what()) == "TimeoutException after 250ms: The operation timed out.");
  CHECK(dynamic_cast<const CancelledException*>(static_cast<const std::exception*>(&e)) == nullptr);
  TimeoutException custom(2s, "no answer");
  CHECK(std::string(custom.what()) == "TimeoutException after 2s: no answer");
}

TEST_CASE("durations are written in the largest exact unit", "[exceptions]") {
  CHECK(format_duration(3s) == "3s");
  CHECK(format_duration(1500ms) == "1500ms");
  CHECK(format_duration(1500us) == "1500us");
  CHECK(format_duration(42ns) == "42ns");
  CHECK(format_duration(0ns) == "0ns");
}
