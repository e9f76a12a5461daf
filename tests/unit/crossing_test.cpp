#include "cancellable/crossing.hpp"

#include <catch2/catch.hpp>

#include <array>
#include <chrono>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

using cancellable::CrossesProcesses;

namespace {

struct Plain {
  int x;
  double y;
  std::array<int, 3> z;
};
struct WithText {
  std::string name;
  template <class Archive>
  void serialize(Archive& archive) {
    archive(name);
  }
};
struct HoldsView {
  std::string_view name;
};

}  // namespace

TEST_CASE("values cross a process boundary, addresses do not", "[crossing]") {
  // Plain data, vectors of it, and what cereal serializes.
  CHECK(CrossesProcesses<int>);
  CHECK(CrossesProcesses<void>);
  CHECK(CrossesProcesses<Plain>);
  CHECK(CrossesProcesses<std::vector<Plain>>);
  CHECK(CrossesProcesses<std::chrono::milliseconds>);
  CHECK(CrossesProcesses<std::string>);
  CHECK(CrossesProcesses<std::map<std::string, std::vector<int>>>);
  CHECK(CrossesProcesses<std::optional<std::string>>);
  CHECK(CrossesProcesses<WithText>);
  // What would arrive as an address in the other process's memory.
  CHECK_FALSE(CrossesProcesses<const char*>);
  CHECK_FALSE(CrossesProcesses<int*>);
  CHECK_FALSE(CrossesProcesses<std::string_view>);
  CHECK_FALSE(CrossesProcesses<std::span<int>>);
  CHECK_FALSE(CrossesProcesses<std::vector<std::string_view>>);
  CHECK_FALSE(CrossesProcesses<std::optional<const char*>>);
  CHECK_FALSE(CrossesProcesses<HoldsView>);
}
