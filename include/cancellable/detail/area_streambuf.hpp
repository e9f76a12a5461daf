// Internal: a streambuf that writes into a fixed area of memory and, past
// its end, only counts (so that the caller can say how large the whole
// would have been). Used on both sides of the worker pool.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <streambuf>

namespace cancellable::detail {

class AreaStreambuf final : public std::streambuf {
 public:
  AreaStreambuf(char* base, std::size_t capacity) : base_(base), capacity_(capacity) {}
  // Bytes produced, written or not.
  std::size_t total() const noexcept { return total_; }
  // Bytes written into the area.
  std::size_t written() const noexcept { return std::min(total_, capacity_); }
  bool overflowed() const noexcept { return total_ > capacity_; }

 private:
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    const auto count = static_cast<std::size_t>(n);
    if (total_ < capacity_) std::memcpy(base_ + total_, s, std::min(count, capacity_ - total_));
    total_ += count;
    return n;
  }
  int_type overflow(int_type ch) override {
    if (ch == traits_type::eof()) return traits_type::not_eof(ch);
    const char c = traits_type::to_char_type(ch);
    xsputn(&c, 1);
    return ch;
  }

  char* base_;
  std::size_t capacity_;
  std::size_t total_ = 0;
};

}  // namespace cancellable::detail
