// The control block an isolate's worker shares with its parent: outcome,
// result location, and progress. For the process backend it lives in an
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

#include "cancellable/isolate_options.hpp"

namespace cancellable::detail {

enum class Outcome : std::uint32_t { none = 0, value = 1, exception = 2 };

struct ControlBlock {
  static constexpr std::size_t kSize = 16 * 1024;

  std::atomic<std::uint32_t> outcome{0};
  // Bytes of the encoded result (or exception).
  std::atomic<std::uint64_t> payload_bytes{0};
  // 1 if the payload is in the named shared memory object, 0 if inline.
  std::atomic<std::uint32_t> payload_in_shm{0};

  // Progress, written by the worker as a seqlock (odd: being written).
  std::atomic<std::uint64_t> progress_seq{0};
  std::atomic<std::uint64_t> progress_done{0};
  std::atomic<std::uint64_t> progress_total{0};
  std::atomic<std::uint32_t> progress_stage_size{0};
  char progress_stage[96] = {};

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

  // A step of the worker's setup that failed (SetupStep), and its errno.
  std::atomic<std::uint32_t> setup_failed_step{0};
  std::atomic<std::int32_t> setup_errno{0};

  void write_progress(std::uint64_t done, std::uint64_t total, const char* stage,
                      std::size_t stage_size) noexcept;
  // The latest consistent progress, or nothing if none was reported.
  std::optional<Progress> read_progress() const;
};

// Setup steps a worker reports as failed (ControlBlock::setup_failed_step).
enum class SetupStep : std::uint32_t {
  none = 0,
  process_group,  // setpgid
  death_signal,   // prctl(PR_SET_PDEATHSIG)
  memory_limit,   // setrlimit(RLIMIT_DATA) or reading the inherited size
  cpu_limit,      // setrlimit(RLIMIT_CPU)
  descriptors,    // keeping the commit descriptor
};
// What the parent says of a failed step.
const char* describe(SetupStep step) noexcept;

// The worker may die at any instruction while the parent reads: every shared
// variable is an atomic that needs no lock.
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(std::atomic<std::int32_t>::is_always_lock_free);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic_ref<char>::is_always_lock_free);

// Bytes available inline after the header.
struct InlinePayload {
  static constexpr std::size_t offset() { return 1024; }
  static constexpr std::size_t capacity() { return ControlBlock::kSize - offset(); }
  static char* data(ControlBlock* block) { return reinterpret_cast<char*>(block) + offset(); }
};
static_assert(sizeof(ControlBlock) <= InlinePayload::offset());

}  // namespace cancellable::detail
