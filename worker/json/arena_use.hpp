// The first page of a warm JSON arena (see JsonLayout in
// cancellable/detail/json_parse.hpp): how the last parse into it used each
// region, and how much of each region holds pages. A worker maps in the
// pages it will likely touch with one madvise(MADV_POPULATE_READ) per region
// (minor faults in a batch) instead of taking one page fault per page. All
// zero in a new arena. Written only by the one worker that holds the arena.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cancellable::detail {

struct JsonArenaUse {
  enum Region : std::size_t { kTape, kStrings, kStructurals, kInput, kRegions };
  std::uint64_t json_bytes = 0;           // input size of the last parse
  std::uint64_t used[kRegions] = {};      // bytes used by the last parse
  std::uint64_t resident[kRegions] = {};  // bytes from the region's start that hold pages
};

}  // namespace cancellable::detail
