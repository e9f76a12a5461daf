// The tasks of the `cancellable-worker` program (see pool.hpp, task.hpp):
// JSON parsing, and tasks that misbehave on purpose, for tests, benchmarks
// and trying a pool out. The parent includes this header to name them;
// only the worker program defines them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cancellable/task.hpp"

namespace cancellable::builtin {

// What a JSON parse found: the input's size and the top-level value's kind
// and element count (members of an object, elements of an array; 1 for a
// scalar).
struct JsonSummary {
  std::uint64_t bytes = 0;
  std::uint64_t top_level_elements = 0;
  bool top_level_is_array = false;
  bool top_level_is_object = false;
  friend bool operator==(const JsonSummary&, const JsonSummary&) = default;
};

// Every value of a JSON document counted by type, and the deepest nesting
// (a scalar document has depth 1).
struct JsonCounts {
  std::uint64_t bytes = 0;
  std::uint64_t objects = 0, arrays = 0, strings = 0, numbers = 0, booleans = 0, nulls = 0;
  std::uint64_t depth = 0;
  friend bool operator==(const JsonCounts&, const JsonCounts&) = default;
};

// Parses the JSON file at path (opened by the worker) and counts its values
// (what `cancellable parse --backend pool` prints).
inline constexpr Task<JsonCounts(std::string)> count_json_file{"cancellable.count_json_file"};

// Parses the JSON file at path (opened by the worker) with simdjson.
// Throws JsonParseError, std::filesystem::filesystem_error.
inline constexpr Task<JsonSummary(std::string)> parse_json_file{"cancellable.parse_json_file"};
// Parses the JSON text passed as the argument.
inline constexpr Task<JsonSummary(std::string)> parse_json_buffer{"cancellable.parse_json_buffer"};

// Returns 0 at once (round-trip benchmarks).
inline constexpr Task<int()> empty{"cancellable.empty"};
// The worker's process id.
inline constexpr Task<int()> pid{"cancellable.pid"};
// Returns its argument.
inline constexpr Task<std::string(std::string)> echo{"cancellable.echo"};
// Never returns (until killed).
inline constexpr Task<int()> spin{"cancellable.spin"};
// Sleeps this many milliseconds, then returns them.
inline constexpr Task<std::int64_t(std::int64_t)> sleep_ms{"cancellable.sleep_ms"};
// Raises this signal in the worker.
inline constexpr Task<int(int)> crash{"cancellable.crash"};
// Ends the worker with this exit code (_exit).
inline constexpr Task<int(int)> exit_code{"cancellable.exit_code"};
// Allocates and touches this many bytes, keeps them (they are the worker's
// until it is recycled), and returns the count.
inline constexpr Task<std::uint64_t(std::uint64_t)> allocate{"cancellable.allocate"};
// Throws std::runtime_error with this message.
inline constexpr Task<int(std::string)> fail{"cancellable.fail"};
// The worker's open descriptors (from /proc/self/fd), sorted.
inline constexpr Task<std::vector<int>()> descriptors{"cancellable.descriptors"};
// Forks a child that sleeps, writes its pid to the file at the path given,
// then spins until killed.
inline constexpr Task<int(std::string)> spawn_child_and_spin{"cancellable.spawn_child_and_spin"};

}  // namespace cancellable::builtin
