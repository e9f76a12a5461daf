// What may cross a process boundary: an isolate's or a pool task's result,
// and a task's arguments (CancellableIsolate::run, WorkerPool::run).
//
//   - plain data (numbers, enums, std::array and C arrays of plain data,
//     std::complex, std::chrono durations and time points, and structs whose
//     fields are all plain data) and vectors of it, without a cereal
//     serialize function: their bytes, copied once;
//   - everything else that cereal can serialize: cereal's binary archive
//     (strings, vectors, arrays, maps, optionals, pairs, tuples, variants,
//     nested, and user types with a serialize member or function);
//   - nothing else: pointers, std::string_view, std::span and types holding
//     them would arrive as addresses in the other process's memory. A run
//     or task with such a type does not compile (with a message saying so).
//     Return std::string, std::vector or a struct of values instead.
//
// Structs are checked field by field with Boost.PFR: a struct of plain data
// that has a C array member or a base class cannot be reflected and fails to
// compile inside Boost.PFR; use std::array, or give it a cereal serialize
// function. Exceptions cross by their own rules (isolate_errors.hpp).
//
// CrossesProcesses<T> says whether T may cross, for a static_assert of your
// own or a constrained template. Compile-time only; no run-time state.
#pragma once

#include <type_traits>

#include "cancellable/detail/isolate_codec.hpp"

namespace cancellable {

template <class T>
concept CrossesProcesses =
    std::is_void_v<T> ||
    (!detail::holds_addresses_v<std::remove_cvref_t<T>> &&
     (detail::raw_copyable_v<std::remove_cvref_t<T>> || detail::is_raw_vector<std::remove_cvref_t<T>>::value ||
      detail::cereal_serializable_v<std::remove_cvref_t<T>>));

}  // namespace cancellable
