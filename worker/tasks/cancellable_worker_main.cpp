// cancellable-worker: the worker program of a WorkerPool, with the built-in
// tasks (include/cancellable/builtin_tasks.hpp). Started by a pool only.
#include <cstdio>

#include "cancellable/task.hpp"

int main(int argc, char** argv) {
  cancellable::worker_main(argc, argv);
  std::fprintf(stderr,
               "cancellable-worker: the worker program of cancellable::WorkerPool; a pool starts it "
               "(PoolOptions::worker_program), not a person\n");
  return 64;
}
