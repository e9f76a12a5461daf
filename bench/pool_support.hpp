// What the pool's benchmark scenarios share (pool_scenarios.cpp,
// batch_scenarios.cpp): the worker program, a pool's options, waiting for a
// pool to settle, and the raw floors that drive a worker by hand.
#pragma once

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#include "bench/measure.hpp"
#include "cancellable/builtin_tasks.hpp"
#include "cancellable/detail/area_streambuf.hpp"
#include "cancellable/pool.hpp"
#include "worker/protocol/futex.hpp"
#include "worker/protocol/pool_slot.hpp"

extern char** environ;

namespace cancellable::bench {

inline std::size_t samples_for(const Settings& settings) { return settings.quick ? 100 : 1000; }

// The worker program: CANCELLABLE_WORKER_PROGRAM from the environment, or
// the one built with this benchmark.
inline std::string worker_program() {
  const char* from_environment = std::getenv("CANCELLABLE_WORKER_PROGRAM");
  return from_environment ? from_environment : CANCELLABLE_BENCH_WORKER_PROGRAM;
}

inline PoolOptions pool_options(std::size_t size, std::size_t standby) {
  PoolOptions options;
  options.worker_program = worker_program();
  options.size = size;
  options.standby = standby;
  return options;
}

// Waits (spinning, yielding) until the pool has all its workers ready and
// none busy: between samples, so that no sample pays for the last one's
// replacement.
inline void settle(const WorkerPool& pool, std::size_t workers) {
  for (;;) {
    const auto s = pool.stats();
    if (s.idle == workers && s.busy == 0 && s.starting == 0) return;
    std::this_thread::yield();
  }
}

// A forked child that answers on two futex words in shared memory, as a
// pool worker does, with nothing else: the floor of a pool round trip.
class PingPong {
 public:
  PingPong() {
    void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
    words_ = new (p) Words;
    child_ = ::fork();
    if (child_ < 0) throw std::runtime_error("fork failed");
    if (child_ == 0) {
      for (std::uint32_t next = 1;; ++next) {
        for (std::uint32_t seen; (seen = words_->request.load(std::memory_order_acquire)) != next;) {
          detail::futex_wait(words_->request, seen);
        }
        words_->response.store(next, std::memory_order_release);
        detail::futex_wake_all(words_->response);
      }
    }
  }
  ~PingPong() {
    ::kill(child_, SIGKILL);
    ::waitpid(child_, nullptr, 0);
    ::munmap(words_, 4096);
  }
  double once() {
    const auto start = Clock::now();
    const std::uint32_t n = ++sent_;
    words_->request.store(n, std::memory_order_release);
    detail::futex_wake_all(words_->request);
    for (std::uint32_t seen; (seen = words_->response.load(std::memory_order_acquire)) != n;) {
      detail::futex_wait(words_->response, seen);
    }
    return us_between(start, Clock::now());
  }

 private:
  struct Words {
    std::atomic<std::uint32_t> request{0};
    std::atomic<std::uint32_t> response{0};
  };
  Words* words_ = nullptr;
  pid_t child_ = 0;
  std::uint32_t sent_ = 0;
};

// A worker program started and driven by hand through the pool's protocol
// (worker/protocol/pool_slot.hpp), without the library's pool: the same
// program, with the same shared memory, as a pool worker. The pool's raw
// floors kill such a process: its exit costs what a pool worker's does
// (page tables and mappings of a C++ program; a tiny process exits 2-3x
// faster on this kind of VM). Started with posix_spawn, not fork: after a
// fork every page this process writes is copy-on-write, and the pool
// samples measured next would pay for those faults.
class RawWorker {
 public:
  RawWorker() {
    const PoolOptions defaults;
    const std::uint64_t args_capacity = defaults.max_argument_bytes;
    const std::uint64_t result_capacity = std::max<std::uint64_t>(defaults.max_result_bytes, 65536);
    bytes_ = detail::PoolSlot::total_bytes(args_capacity, result_capacity);
    fd_ = ::memfd_create("raw-worker", MFD_CLOEXEC);
    if (fd_ < 0 || ::ftruncate(fd_, static_cast<off_t>(bytes_)) != 0) throw std::runtime_error("memfd failed");
    void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd_, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
    slot_ = new (p) detail::PoolSlot;
    slot_->magic = detail::PoolSlot::kMagic;
    slot_->version = detail::PoolSlot::kVersion;
    slot_->args_capacity = args_capacity;
    slot_->result_capacity = result_capacity;

    std::vector<std::string> args = {worker_program(), detail::kPoolWorkerFlag, std::to_string(::getpid())};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    ::posix_spawn_file_actions_init(&actions);
    ::posix_spawnattr_init(&attributes);
    ::posix_spawn_file_actions_adddup2(&actions, fd_, detail::kPoolSlotDescriptor);
    ::posix_spawn_file_actions_addclosefrom_np(&actions, detail::kPoolSlotDescriptor + 1);
    ::posix_spawnattr_setpgroup(&attributes, 0);
    ::posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP);
    const int error = ::posix_spawn(&pid_, argv[0], &actions, &attributes, argv.data(), environ);
    ::posix_spawn_file_actions_destroy(&actions);
    ::posix_spawnattr_destroy(&attributes);
    if (error != 0) throw std::runtime_error("posix_spawn of the worker program failed");
    // Ready, or gone.
    for (std::uint32_t seen; (seen = slot_->response.load()) == detail::PoolSlot::kStarting;) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = 0;
        throw std::runtime_error("the worker program exited before it was ready");
      }
      const std::chrono::nanoseconds bound = std::chrono::milliseconds(10);
      detail::futex_wait(slot_->response, seen, &bound);
    }
  }
  ~RawWorker() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::munmap(slot_, bytes_);
    ::close(fd_);
  }
  RawWorker(const RawWorker&) = delete;
  RawWorker& operator=(const RawWorker&) = delete;

  // Posts a built-in task without arguments, as the pool does; returns its
  // number.
  template <class... A>
  std::uint32_t post(std::string_view name, const std::tuple<A...>& arguments = std::tuple<>{}) {
    detail::AreaStreambuf buffer(slot_->args(), slot_->args_capacity);
    std::ostream out(&buffer);
    detail::encode_result(arguments, out);
    out.flush();
    std::memcpy(slot_->task_name, name.data(), name.size());
    slot_->task_name_size = static_cast<std::uint32_t>(name.size());
    slot_->args_bytes = buffer.total();
    slot_->max_result_bytes = 65536;
    const std::uint32_t n = next_++;
    slot_->request.store(n, std::memory_order_release);
    detail::futex_wake_all(slot_->request);
    return n;
  }
  void post_spin() { (void)post(builtin::spin.name); }
  // Until the posted spin task runs (it reports progress first).
  void wait_running() const {
    while (slot_->progress_seq.load(std::memory_order_acquire) == 0) std::this_thread::yield();
  }
  // Waits for the answer to task n.
  void wait_answer(std::uint32_t n) {
    for (std::uint32_t seen; (seen = slot_->response.load(std::memory_order_acquire)) != n;) {
      detail::futex_wait(slot_->response, seen);
    }
  }
  // An empty task, there and back.
  void empty_roundtrip() { wait_answer(post(builtin::empty.name)); }
  // SIGKILL and waitpid.
  void kill_and_reap() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = 0;
  }
  pid_t pid() const { return pid_; }

 private:
  std::size_t bytes_ = 0;
  int fd_ = -1;
  detail::PoolSlot* slot_ = nullptr;
  pid_t pid_ = 0;
  std::uint32_t next_ = detail::PoolSlot::kFirstTask;
};

}  // namespace cancellable::bench
