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
  explicit Mapping(std::size_t bytes) : size_(bytes) {
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

 private:
  char* data_ = nullptr;
  std::size_t size_;
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
    if (!cache().idle || cache().idle->size() < returned->size()) {
      dropped = std::move(cache().idle);
      cache().idle = std::move(returned);
    }
  }
  // Unmapped outside the lock: dropped (a smaller idle arena) or returned.
}

}  // namespace

std::shared_ptr<JsonArena> acquire_json_arena(std::size_t bytes) {
  std::unique_ptr<Mapping> mapping;
  {
    std::lock_guard lock(cache().mutex);
    if (cache().idle && cache().idle->size() >= bytes) mapping = std::move(cache().idle);
  }
  if (!mapping) {
    constexpr std::size_t kHugePage = std::size_t{2} << 20;
    mapping = std::make_unique<Mapping>((bytes + kHugePage - 1) / kHugePage * kHugePage);
  }
  return std::shared_ptr<JsonArena>(mapping.release(),
                                    [](JsonArena* a) { give_back(static_cast<Mapping*>(a)); });
}

ScratchMemory::ScratchMemory(std::size_t bytes, bool huge_pages) {
  constexpr std::size_t kHugePage = std::size_t{2} << 20;
  size_ = (std::max<std::size_t>(bytes, 1) + kHugePage - 1) / kHugePage * kHugePage;
  // Over-reserve by one huge page so that the region can start on a huge-page
  // boundary (mmap only promises 4 KiB alignment).
  void* p = ::mmap(nullptr, size_ + kHugePage, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "JSON scratch: mmap");
  char* start = static_cast<char*>(p);
  char* aligned = reinterpret_cast<char*>((reinterpret_cast<std::uintptr_t>(start) + kHugePage - 1) /
                                          kHugePage * kHugePage);
  if (aligned > start) ::munmap(start, static_cast<std::size_t>(aligned - start));
  char* end = start + size_ + kHugePage;
  if (end > aligned + size_) ::munmap(aligned + size_, static_cast<std::size_t>(end - (aligned + size_)));
  data_ = aligned;
  // Advice only: without transparent huge pages this is a plain mapping.
  // Small parses keep small pages: a huge page is zeroed whole on first touch.
  constexpr std::size_t kHugePagesFrom = std::size_t{16} << 20;
  if (huge_pages && size_ >= kHugePagesFrom) (void)::madvise(data_, size_, MADV_HUGEPAGE);
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
