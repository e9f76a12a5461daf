// The memory a pool worker shares with its parent: one anonymous file
// (memfd_create) per worker, handed to it at spawn as descriptor 3 and
// mapped by both. Nothing has a name: when both sides are gone, so is the
// memory, whatever killed them.
//
// Layout: this header (kHeaderBytes: the header every worker's memory
// starts with, worker_header.hpp, then the pool's), then the argument area
// (args_capacity), then the result area (result_capacity). The parent
// writes the capacities before the spawn and keeps its own copies: it never
// trusts a size the worker wrote (the worker may be killed, or be broken,
// mid-write) without checking it against them.
//
// Hand-over, with two futex words (see futex.hpp) and no lock:
//   response == kStarting   the worker is starting;
//   response == kReady      it has checked this header and waits for work;
//   parent: writes task name and arguments, then request = n (n = 2, 3, ...),
//           wakes `request`;
//   worker: runs task n, writes outcome and payload, then response = n,
//           wakes `response`.
// The parent alone may also set response to kDied or kKilled, once the
// worker is dead or being killed (its memory is then never used again), to
// wake its own thread waiting there.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "worker/protocol/worker_header.hpp"

namespace cancellable::detail {

struct PoolSlot : WorkerHeader {
  static constexpr std::uint32_t kMagic = 0x4c4f4f50;  // "POOL"
  static constexpr std::uint32_t kVersion = 2;
  static constexpr std::size_t kHeaderBytes = 4096;
  static constexpr std::size_t kMaxTaskName = 200;

  static constexpr std::uint32_t kStarting = 0;
  static constexpr std::uint32_t kReady = 1;
  static constexpr std::uint32_t kFirstTask = 2;
  static constexpr std::uint32_t kKilled = 0xfffffffe;
  static constexpr std::uint32_t kDied = 0xffffffff;

  using Outcome = detail::Outcome;

  // Written by the parent before the spawn.
  std::uint32_t magic = 0;
  std::uint32_t version = 0;
  std::uint64_t args_capacity = 0;
  std::uint64_t result_capacity = 0;

  std::atomic<std::uint32_t> request{0};
  std::atomic<std::uint32_t> response{kStarting};

  // The task: written by the parent before `request`.
  std::uint32_t task_name_size = 0;
  char task_name[kMaxTaskName] = {};
  std::uint64_t args_bytes = 0;
  std::uint64_t max_result_bytes = 0;
  // CPU seconds the task may use (0: no limit).
  std::uint64_t cpu_limit_seconds = 0;
  // Its outcome: WorkerHeader::outcome and payload_bytes, written by the
  // worker before `response`; its progress: WorkerHeader's, cleared by the
  // parent before `request`.

  static std::size_t total_bytes(std::uint64_t args_capacity, std::uint64_t result_capacity) noexcept {
    return kHeaderBytes + args_capacity + result_capacity;
  }
  char* args() noexcept { return reinterpret_cast<char*>(this) + kHeaderBytes; }
  char* result() noexcept { return args() + args_capacity; }
};

static_assert(sizeof(PoolSlot) <= PoolSlot::kHeaderBytes);

// The descriptor the memory arrives on in the worker, and the arguments
// that tell a program it was started as a pool worker:
//   <program> --cancellable-pool-worker <parent pid> [<memory limit bytes>]
constexpr int kPoolSlotDescriptor = 3;
constexpr const char* kPoolWorkerFlag = "--cancellable-pool-worker";
// Environment variable a pool worker runs with: a pool created inside one
// refuses to start (pools do not nest by accident).
constexpr const char* kPoolWorkerEnvironment = "CANCELLABLE_POOL_WORKER";

}  // namespace cancellable::detail
