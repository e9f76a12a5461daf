// Internal: the library's own threads (timer service, reaper) mark themselves,
// so that completing a future there hands continuations to the default
// executor instead of running user code on them.
#pragma once

namespace cancellable::detail {

bool on_library_thread() noexcept;

// Marks the calling thread as a library thread for the scope's lifetime.
class LibraryThreadScope {
 public:
  LibraryThreadScope() noexcept;
  ~LibraryThreadScope();
  LibraryThreadScope(const LibraryThreadScope&) = delete;
  LibraryThreadScope& operator=(const LibraryThreadScope&) = delete;

 private:
  bool previous_;
};

}  // namespace cancellable::detail
