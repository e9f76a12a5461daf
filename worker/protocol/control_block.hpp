// The control block an isolate's worker shares with its parent: the header
// every worker's memory starts with (outcome, progress, setup failure), and
// the result's location. For the process backend it lives in an
// anonymous shared mapping created before fork (no name, no descriptor, gone
// when both sides unmap it); for the thread backend, on the heap.
//
// No lock lives here: the worker may be killed at any instruction. The parent
// reads the outcome only after the worker has exited, or has signalled (the
// commit descriptor) that the outcome is complete; progress is a seqlock
// that the parent retries, never waits on.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "worker/protocol/worker_header.hpp"

namespace cancellable::detail {

// The fork isolate's memory: the common header (worker_header.hpp), then
// what only a fork isolate needs.
struct ControlBlock : WorkerHeader {
  static constexpr std::size_t kSize = 16 * 1024;

  // 1 if the payload is in the named shared memory object, 0 if inline.
  std::atomic<std::uint32_t> payload_in_shm{0};

  // Name of the shared memory object for results too large to be inline,
  // and whether the worker may have created it (set before creating it, so a
  // worker killed half-way still tells the parent what to remove).
  char shm_name[64] = {};
  std::atomic<std::uint32_t> shm_claimed{0};

  // The start gate: the worker runs nothing of the caller's (and so cannot
  // exit on its own) until the parent holds a pidfd for it and has checked
  // it is its own child. A futex word in shared memory.
  enum Gate : std::uint32_t { kGateClosed = 0, kGateWaiting = 1, kGateOpen = 2 };
  std::atomic<std::uint32_t> start_gate{kGateClosed};
};

// Bytes available inline after the header.
struct InlinePayload {
  static constexpr std::size_t offset() { return 1024; }
  static constexpr std::size_t capacity() { return ControlBlock::kSize - offset(); }
  static char* data(ControlBlock* block) { return reinterpret_cast<char*>(block) + offset(); }
};
static_assert(sizeof(ControlBlock) <= InlinePayload::offset());

}  // namespace cancellable::detail
