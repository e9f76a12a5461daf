#include "cancellable/version.hpp"

#include <catch2/catch.hpp>

#include <string>

TEST_CASE("the version header and the linked library agree on the version", "[version]") {
  const std::string expected = std::to_string(CANCELLABLE_VERSION_MAJOR) + "." +
                               std::to_string(CANCELLABLE_VERSION_MINOR) + "." +
                               std::to_string(CANCELLABLE_VERSION_PATCH);
  CHECK(expected == CANCELLABLE_VERSION_STRING);
  CHECK(expected == cancellable::version());
}
