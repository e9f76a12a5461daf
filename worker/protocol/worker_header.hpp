// The header at the start of every worker's shared memory, of a fork
// isolate (ControlBlock) and of a pool worker (PoolSlot) alike: what the
// parent reads of any worker, read the same way whatever the backend.
//
// No lock lives here: the worker may be killed at any instruction. Every
// field is an atomic that needs no lock; the parent checks what it reads
// (sizes against its own copies of the capacities, steps against the known
// ones) and never waits on the worker: progress is a seqlock the parent
// retries a bounded number of times.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>

#include "cancellable/isolate_options.hpp"

namespace cancellable::detail {

// What the worker's payload is. (too_large: the result did not fit; the
// payload size is the size it would have had.)
enum class Outcome : std::uint32_t { none = 0, value = 1, exception = 2, too_large = 3 };

// Setup steps a worker reports as failed (WorkerHeader::setup_failed_step).
enum class SetupStep : std::uint32_t {
  none = 0,
  process_group,  // setpgid
  death_signal,   // prctl(PR_SET_PDEATHSIG)
  memory_limit,   // setrlimit(RLIMIT_DATA) or reading the inherited size
  cpu_limit,      // setrlimit(RLIMIT_CPU)
  descriptors,    // keeping the commit descriptor
  shared_memory,  // mapping the pool's memory (descriptor 3)
};
inline constexpr std::uint32_t kLastSetupStep = static_cast<std::uint32_t>(SetupStep::shared_memory);
// What the parent says of a failed step ("could not <describe(step)>").
const char* describe(SetupStep step) noexcept;

struct WorkerHeader {
  // The outcome of the work (Outcome), written before the parent is told.
  std::atomic<std::uint32_t> outcome{0};
  // Bytes of the encoded result (or exception).
  std::atomic<std::uint64_t> payload_bytes{0};

  // Progress, written by the worker as a seqlock (odd: being written).
  std::atomic<std::uint64_t> progress_seq{0};
  std::atomic<std::uint64_t> progress_done{0};
  std::atomic<std::uint64_t> progress_total{0};
  std::atomic<std::uint32_t> progress_stage_size{0};
  char progress_stage[96] = {};

  // A step of the worker's setup that failed (SetupStep), and its errno,
  // written before the worker exits.
  std::atomic<std::uint32_t> setup_failed_step{0};
  std::atomic<std::int32_t> setup_errno{0};

  // The parent's request that the work stop (0: none). Read by the work's
  // stop_token in a later version (graded stop); written only by the parent.
  std::atomic<std::uint32_t> stop{0};

  void write_progress(std::uint64_t done, std::uint64_t total, const char* stage,
                      std::size_t stage_size) noexcept;
  // The latest consistent progress, or nothing if none was reported.
  std::optional<Progress> read_progress() const;
  // Forgets the progress (the parent, before it hands a pool worker its next
  // task: the worker writes none while idle).
  void clear_progress() noexcept { progress_seq.store(0, std::memory_order_release); }
  // The step that failed and its errno, if the worker reported one.
  std::optional<std::pair<SetupStep, int>> setup_failure() const noexcept;
};

// The worker may die at any instruction while the parent reads: every shared
// variable is an atomic that needs no lock.
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(std::atomic<std::int32_t>::is_always_lock_free);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic_ref<char>::is_always_lock_free);

}  // namespace cancellable::detail
