// Futex waits and wakes on 32-bit words in memory shared between processes
// (no FUTEX_PRIVATE_FLAG): the cross-process wake-up of the worker pool. A
// futex holds no lock: a waiter sleeps only while the word still has the
// value it saw, so a side killed at any instruction can never leave the
// other waiting on a critical section it did not finish.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>

namespace cancellable::detail {

// Sleeps while word == seen, at most `timeout` if given (a relative
// CLOCK_MONOTONIC duration). Returns on a wake, a change of the word, a
// signal or the timeout: callers re-check the word.
inline void futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t seen,
                       const std::chrono::nanoseconds* timeout = nullptr) noexcept {
  timespec ts{};
  if (timeout) {
    const auto ns = timeout->count() > 0 ? timeout->count() : 0;
    ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  }
  ::syscall(SYS_futex, reinterpret_cast<const std::uint32_t*>(&word), FUTEX_WAIT, seen, timeout ? &ts : nullptr,
            nullptr, 0);
}

// Wakes every waiter of word (in any process that maps it).
inline void futex_wake_all(const std::atomic<std::uint32_t>& word) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<const std::uint32_t*>(&word), FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
}

// As futex_wait, for a waiter of a kind (a bit of `kinds`): futex_wake_all
// wakes every kind, futex_wake_kinds only those asked for. The timeout is a
// duration from now.
inline void futex_wait_kind(const std::atomic<std::uint32_t>& word, std::uint32_t seen, std::uint32_t kind,
                            const std::chrono::nanoseconds* timeout = nullptr) noexcept {
  timespec at{};
  if (timeout) {
    ::clock_gettime(CLOCK_MONOTONIC, &at);
    const auto ns = (timeout->count() > 0 ? timeout->count() : 0) + at.tv_nsec;
    at.tv_sec += static_cast<time_t>(ns / 1'000'000'000);
    at.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  }
  // (FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time.)
  ::syscall(SYS_futex, reinterpret_cast<const std::uint32_t*>(&word), FUTEX_WAIT_BITSET, seen,
            timeout ? &at : nullptr, nullptr, kind);
}

inline void futex_wake_kinds(const std::atomic<std::uint32_t>& word, std::uint32_t kinds) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<const std::uint32_t*>(&word), FUTEX_WAKE_BITSET, INT32_MAX, nullptr,
            nullptr, kinds);
}

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

}  // namespace cancellable::detail
