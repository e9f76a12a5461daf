// The JSON tasks of the `cancellable-worker` program (the json component;
// see pool.hpp, task.hpp): parse a file or a buffer with simdjson in a pool
// worker and get a summary back. The parent includes this header to name
// them (it needs no simdjson); only the worker program, built with the json
// component, defines them. Values only: safe to use from any thread.
#pragma once

#include <cstdint>
#include <string>

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

}  // namespace cancellable::builtin
