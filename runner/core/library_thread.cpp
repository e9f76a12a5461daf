#include "cancellable/detail/library_thread.hpp"

namespace cancellable::detail {

namespace {
thread_local bool this_thread_is_library = false;
}

bool on_library_thread() noexcept { return this_thread_is_library; }

LibraryThreadScope::LibraryThreadScope() noexcept : previous_(this_thread_is_library) {
  this_thread_is_library = true;
}

LibraryThreadScope::~LibraryThreadScope() { this_thread_is_library = previous_; }

}  // namespace cancellable::detail
