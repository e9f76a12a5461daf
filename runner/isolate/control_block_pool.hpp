// Control blocks of finished runs, kept mapped for the next ones: mapping and
// unmapping 16 KiB of shared memory per run costs system calls and, for the
// unmap, a TLB shoot-down across CPUs. A block goes back only after its
// worker was reaped (or never started), so no process of that run writes to
// it any more (except one that left the worker's process group, which the
// library cannot reach). Thread-safe.
#pragma once

#include <memory>

#include <boost/interprocess/mapped_region.hpp>

namespace cancellable::detail {

using ControlRegion = std::unique_ptr<boost::interprocess::mapped_region>;

// An idle block, or a new mapping of ControlBlock::kSize bytes of anonymous
// shared memory. Throws boost::interprocess::interprocess_exception (or
// std::bad_alloc) if it cannot be mapped.
ControlRegion acquire_control_region();

// Keeps region for a later run (or unmaps it if enough are kept). Null is ignored.
void give_back_control_region(ControlRegion region) noexcept;

}  // namespace cancellable::detail
