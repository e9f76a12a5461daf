#include "cancellable/detail/json_arena.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <mutex>
#include <system_error>
#include <vector>

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

// Up to two idle arenas: when a document is destroyed, its arena may go
// back a few microseconds later, on the thread that completed its future (it
// holds the future's state until it returns), and a parse that starts at
// once would otherwise get a fresh, cold arena.
constexpr std::size_t kMaxIdle = 2;

struct Cache {
  std::mutex mutex;
  std::vector<std::unique_ptr<Mapping>> idle;
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
    auto& idle = cache().idle;
    try {
      idle.push_back(std::move(returned));
    } catch (...) {
      dropped = std::move(returned);
    }
    if (idle.size() > kMaxIdle) {
      // Keep the larger ones.
      auto smallest = std::min_element(idle.begin(), idle.end(), [](const auto& a, const auto& b) {
        return a->capacity() < b->capacity();
      });
      dropped = std::move(*smallest);
      idle.erase(smallest);
    }
  }
  // Unmapped outside the lock.
}

}  // namespace

std::shared_ptr<JsonArena> acquire_json_arena(std::size_t capacity, std::size_t bytes) {
  std::unique_ptr<Mapping> mapping;
  {
    std::lock_guard lock(cache().mutex);
    auto& idle = cache().idle;
    // The smallest that fits.
    auto best = idle.end();
    for (auto it = idle.begin(); it != idle.end(); ++it) {
      if ((*it)->capacity() >= capacity && (*it)->size() >= bytes &&
          (best == idle.end() || (*it)->capacity() < (*best)->capacity())) {
        best = it;
      }
    }
    if (best != idle.end()) {
      mapping = std::move(*best);
      idle.erase(best);
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
  std::vector<std::unique_ptr<Mapping>> dropped;
  {
    std::lock_guard lock(cache().mutex);
    dropped.swap(cache().idle);
  }
}

}  // namespace cancellable::detail
