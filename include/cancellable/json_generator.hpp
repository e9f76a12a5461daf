// A deterministic generator of realistic, API-like JSON, for tests,
// benchmarks and the demo: an array of user records with nested objects,
// arrays, numbers, booleans, nulls, escapes and non-ASCII text (including
// characters outside the Basic Multilingual Plane).
//
// The same (size, seed) always gives the same bytes. Thread-safety: pure
// function, safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace cancellable {

// At least approx_bytes bytes of valid JSON (it ends after the record that
// reaches the size), a top-level array of objects.
std::string generate_json(std::size_t approx_bytes, std::uint64_t seed = 1);

}  // namespace cancellable
