// Work that takes time on purpose, for tests that need a worker busy (never
// as a way to wait for something: tests wait on events).
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>

namespace test_support {

// Sleeps in pause() until killed (no CPU).
[[noreturn]] inline void pause_forever() {
  for (;;) ::pause();
}

// Uses a CPU until killed.
[[noreturn]] inline void burn_cpu_forever() {
  for (;;) {
    asm volatile("" ::: "memory");
  }
}

// Uses a CPU for about d of wall-clock time.
inline void spin_for(std::chrono::microseconds d) {
  const auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) {
  }
}

}  // namespace test_support
