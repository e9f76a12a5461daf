// The memory a pool worker shares with its parent, as the parent holds it:
// one anonymous file (memfd) mapped here, handed to the worker at spawn.
// The layout and the hand-over are in worker/protocol/pool_slot.hpp.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <new>
#include <system_error>

#include "worker/protocol/pool_slot.hpp"

namespace cancellable::detail {

// The worker's shared memory, as the parent holds it.
struct SlotMemory {
  SlotMemory(std::uint64_t args_capacity, std::uint64_t result_capacity)
      : args_capacity(args_capacity),
        result_capacity(result_capacity),
        bytes(PoolSlot::total_bytes(args_capacity, result_capacity)) {
    fd = ::memfd_create("cancellable-pool-worker", MFD_CLOEXEC);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "WorkerPool: memfd_create");
    if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
      const int error = errno;
      ::close(fd);
      throw std::system_error(error, std::generic_category(), "WorkerPool: ftruncate of the worker's memory");
    }
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    if (p == MAP_FAILED) {
      const int error = errno;
      ::close(fd);
      throw std::system_error(error, std::generic_category(), "WorkerPool: mmap of the worker's memory");
    }
    // Not inherited by this process's later forks (an isolate's): a forked
    // child has no business with a worker's memory, and would pin it.
    (void)::madvise(p, bytes, MADV_DONTFORK);
    slot = new (p) PoolSlot;
    // The first pages of both areas, mapped in here (not during a task).
    std::memset(args(), 0, std::min<std::uint64_t>(args_capacity, 4096));
    std::memset(const_cast<char*>(result()), 0, std::min<std::uint64_t>(result_capacity, 4096));
    slot->magic = PoolSlot::kMagic;
    slot->version = PoolSlot::kVersion;
    slot->args_capacity = args_capacity;
    slot->result_capacity = result_capacity;
  }
  ~SlotMemory() {
    ::munmap(slot, bytes);
    if (fd >= 0) ::close(fd);
  }
  SlotMemory(const SlotMemory&) = delete;
  SlotMemory& operator=(const SlotMemory&) = delete;

  // The parent's own copies: never read back from the shared header.
  const std::uint64_t args_capacity;
  const std::uint64_t result_capacity;
  const std::size_t bytes;
  int fd = -1;  // closed once the worker has it
  PoolSlot* slot = nullptr;
  char* args() const noexcept { return reinterpret_cast<char*>(slot) + PoolSlot::kHeaderBytes; }
  const char* result() const noexcept { return args() + args_capacity; }
};

}  // namespace cancellable::detail
