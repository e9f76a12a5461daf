#include "worker/protocol/worker_header.hpp"

#include <algorithm>
#include <string>

namespace cancellable::detail {

const char* describe(SetupStep step) noexcept {
  switch (step) {
    case SetupStep::none: return "set itself up";
    case SetupStep::process_group: return "enter a process group of its own (setpgid)";
    case SetupStep::death_signal: return "arrange to die with its parent (prctl PR_SET_PDEATHSIG)";
    case SetupStep::memory_limit: return "apply its memory limit (setrlimit RLIMIT_DATA)";
    case SetupStep::cpu_limit: return "apply its CPU time limit (setrlimit RLIMIT_CPU)";
    case SetupStep::descriptors: return "keep its commit descriptor (dup3)";
    case SetupStep::shared_memory: return "map the pool's shared memory (descriptor 3)";
  }
  return "set itself up";
}

// A seqlock without fences: every data store is a release store and every data
// load an acquire load, so the odd sequence number is ordered before the data
// and the data before the even one.

void WorkerHeader::write_progress(std::uint64_t done, std::uint64_t total, const char* stage,
                                  std::size_t stage_size) noexcept {
  const auto seq = progress_seq.load(std::memory_order_relaxed);
  progress_seq.store(seq + 1, std::memory_order_relaxed);
  progress_done.store(done, std::memory_order_release);
  progress_total.store(total, std::memory_order_release);
  const auto size = std::min(stage_size, sizeof progress_stage);
  for (std::size_t i = 0; i < size; ++i) {
    std::atomic_ref<char>(progress_stage[i]).store(stage[i], std::memory_order_release);
  }
  progress_stage_size.store(static_cast<std::uint32_t>(size), std::memory_order_release);
  progress_seq.store(seq + 2, std::memory_order_release);
}

std::optional<Progress> WorkerHeader::read_progress() const {
  // A worker killed in the middle of a write leaves the sequence odd for
  // ever: give up after a bounded number of tries instead of waiting.
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const auto before = progress_seq.load(std::memory_order_acquire);
    if (before == 0) return std::nullopt;
    if (before % 2 == 1) continue;
    Progress p;
    p.done = progress_done.load(std::memory_order_acquire);
    p.total = progress_total.load(std::memory_order_acquire);
    const auto size = std::min<std::size_t>(progress_stage_size.load(std::memory_order_acquire),
                                            sizeof progress_stage);
    p.stage.resize(size);
    auto* stage = const_cast<char*>(progress_stage);
    for (std::size_t i = 0; i < size; ++i) {
      p.stage[i] = std::atomic_ref<char>(stage[i]).load(std::memory_order_acquire);
    }
    if (progress_seq.load(std::memory_order_acquire) == before) return p;
  }
  return std::nullopt;
}

std::optional<std::pair<SetupStep, int>> WorkerHeader::setup_failure() const noexcept {
  const std::uint32_t step = setup_failed_step.load(std::memory_order_acquire);
  if (step == 0 || step > kLastSetupStep) return std::nullopt;  // (none, or not a step we know)
  return std::make_pair(static_cast<SetupStep>(step), static_cast<int>(setup_errno.load(std::memory_order_relaxed)));
}

}  // namespace cancellable::detail
