// Internal: the wire format of WorkerPool::map's chunks, shared by the parent
// (pool.hpp, runner/pool/map.cpp) and the worker (worker/pool_worker.cpp).
// Not part of the API.
//
// A chunk is one pool task named kMapTaskName. Its arguments:
//   inputs (each one task's arguments, encoded as for run())
//   | offsets: u64 × (n + 1), offsets[0] = 0, offsets[n] = inputs' size
//   | the task's name
//   | MapArgsTrailer
// Its answer (the worker runs the inputs in order and stops at the first
// that throws):
//   results (each encoded as run()'s result; nothing for a void task)
//   | offsets: u64 × (done + 1)
//   | the failing input's exception, encoded as a task's exception
//   | MapResultTrailer
// Each input is reported as progress (done = inputs finished) before it
// runs, so a worker that dies in a chunk tells which input killed it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

namespace cancellable::detail {

inline constexpr const char* kMapTaskName = "cancellable.map";
inline constexpr std::uint64_t kMapMagic = 0x70616d2e6c6c6563ULL;  // "cell.map"

struct MapArgsTrailer {
  std::uint64_t inputs = 0;
  std::uint64_t name_size = 0;
  std::uint64_t magic = kMapMagic;
};

struct MapResultTrailer {
  std::uint64_t done = 0;
  std::uint64_t failed = 0;  // 1: the input at index `done` threw
  std::uint64_t error_size = 0;
  std::uint64_t magic = kMapMagic;
};

// Appends the offsets, the name and the trailer to a chunk's encoded inputs.
inline void finish_map_args(std::string& chunk, const std::vector<std::uint64_t>& offsets, std::string_view name) {
  chunk.append(reinterpret_cast<const char*>(offsets.data()), offsets.size() * sizeof(std::uint64_t));
  chunk.append(name);
  MapArgsTrailer trailer;
  trailer.inputs = offsets.size() - 1;
  trailer.name_size = name.size();
  chunk.append(reinterpret_cast<const char*>(&trailer), sizeof trailer);
}

// A chunk's answer, checked (runner/pool/map.cpp): the results' bytes and
// offsets, and the failure (decoded) if an input threw.
struct MapChunkAnswer {
  const char* results = nullptr;
  std::vector<std::uint64_t> offsets;  // done + 1
  std::exception_ptr failure;          // the exception of input `done`, or null
  std::size_t done() const noexcept { return offsets.empty() ? 0 : offsets.size() - 1; }
};
// Throws std::runtime_error for an answer that is not a chunk's.
MapChunkAnswer read_map_answer(std::string_view bytes);

}  // namespace cancellable::detail
