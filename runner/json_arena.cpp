#include "cancellable/detail/json_arena.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <mutex>
#include <system_error>

namespace cancellable::detail {

namespace {

class Mapping final : public JsonArena {
 public:
  Mapping(std::size_t capacity, std::size_t bytes) : size_(bytes), capacity_(capacity) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
    if (p == MAP_FAILED) {
      throw std::system_error(errno, std::generic_category(), "JSON arena: mmap");
    }
    data_ = static_cast<char*>(p);
  }
  ~Mapping() override { ::munmap(data_, size_); }
  char* data() const noexcept override { return data_; }
  std::size_t size() const noexcept override { return size_; }
  std::size_t capacity() const noexcept override { return capacity_; }

 private:
  char* data_ = nullptr;
  std::size_t size_;
  std::size_t capacity_;
};

struct Cache {
  std::mutex mutex;
  std::unique_ptr<Mapping> idle;
};

Cache& cache() {
  static auto* c = new Cache();  // never destroyed: arenas may be returned during exit
  return *c;
}

void give_back(Mapping* mapping) noexcept {
  std::unique_ptr<Mapping> returned(mapping);
  std::unique_ptr<Mapping> dropped;
  {
    std::lock_guard lock(cache().mutex);
    if (!cache().idle || cache().idle->capacity() < returned->capacity()) {
      dropped = std::move(cache().idle);
      cache().idle = std::move(returned);
    }
  }
  // Unmapped outside the lock: dropped (a smaller idle arena) or returned.
}

}  // namespace

std::shared_ptr<JsonArena> acquire_json_arena(std::size_t capacity, std::size_t bytes) {
  std::unique_ptr<Mapping> mapping;
  {
    std::lock_guard lock(cache().mutex);
    if (cache().idle && cache().idle->capacity() >= capacity && cache().idle->size() >= bytes) {
      mapping = std::move(cache().idle);
    }
  }
  if (!mapping) {
    constexpr std::size_t kHugePage = std::size_t{2} << 20;
    mapping = std::make_unique<Mapping>(capacity, (bytes + kHugePage - 1) / kHugePage * kHugePage);
  }
  return std::shared_ptr<JsonArena>(mapping.release(),
                                    [](JsonArena* a) { give_back(static_cast<Mapping*>(a)); });
}

ScratchMemory::ScratchMemory(std::size_t bytes) : size_(std::max<std::size_t>(bytes, 1)) {
  void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "JSON scratch: mmap");
  data_ = static_cast<char*>(p);
}

ScratchMemory::~ScratchMemory() {
  if (data_) ::munmap(data_, size_);
}

void release_idle_json_arena() noexcept {
  std::unique_ptr<Mapping> dropped;
  std::lock_guard lock(cache().mutex);
  dropped = std::move(cache().idle);
}

}  // namespace cancellable::detail
