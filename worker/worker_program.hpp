// Whether this program is a worker program: it called worker_main (and was
// not started as a pool's worker, or worker_main would not have returned).
// A pool made in such a program defaults to it as its worker program
// (PoolOptions::worker_program).
#pragma once

namespace cancellable::detail {

bool worker_main_was_called() noexcept;

}  // namespace cancellable::detail
