// Internal: shared memory that a worker parses into and the caller reads in
// place. Up to two idle arenas are kept warm between parses: their pages, once touched
// by a worker, stay resident, and a first parse into fresh pages is far
// slower than a parse into warm ones.
#pragma once

#include <cstddef>
#include <memory>

namespace cancellable::detail {

class JsonArena {
 public:
  virtual ~JsonArena() = default;
  virtual char* data() const noexcept = 0;
  virtual std::size_t size() const noexcept = 0;
  // The largest JSON input (in bytes) that this arena was laid out for.
  virtual std::size_t capacity() const noexcept = 0;
};

// An arena for JSON inputs of up to capacity bytes, of at least bytes
// (MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, created in this process so
// that forked workers share it; zero-filled when new). Reuses an idle arena
// if its capacity is large enough. The arena goes back to the cache when the
// last reference is dropped. Throws std::system_error if mmap fails.
std::shared_ptr<JsonArena> acquire_json_arena(std::size_t capacity, std::size_t bytes);

// Unmaps the idle arenas (their memory is returned to the system).
void release_idle_json_arena() noexcept;

// Private scratch memory for one parse in a worker that has no arena:
// fresh anonymous pages. Address space is reserved, not committed: only
// touched pages cost memory. Unmapped on destruction. Throws
// std::system_error if mmap fails.
class ScratchMemory {
 public:
  explicit ScratchMemory(std::size_t bytes);
  ~ScratchMemory();
  ScratchMemory(const ScratchMemory&) = delete;
  ScratchMemory& operator=(const ScratchMemory&) = delete;
  char* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }

 private:
  char* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace cancellable::detail
