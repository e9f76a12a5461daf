// A pool's parent for the parent-death test: starts a pool of cancellable-
// worker (argv[1]) with a task that started a child and spins, writes its
// workers' pids to the file argv[2] (the task's child's to argv[2].child),
// and waits to be killed.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "cancellable/builtin_tasks.hpp"
#include "cancellable/pool.hpp"

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  cancellable::PoolOptions options;
  options.worker_program = argv[1];
  options.size = 2;
  options.standby = 1;
  cancellable::WorkerPool pool(options);
  const std::string pids = argv[2];
  // A task that started a child of its own (its pid in pids.child).
  auto spinning = pool.run(cancellable::builtin::spawn_child_and_spin, pids + ".child");
  (void)pool.run(cancellable::builtin::pid).get();  // the other slot works too
  while (!std::filesystem::exists(pids + ".child")) {
  }
  {
    std::ofstream out(pids + ".tmp");
    // (Each thread has its own list: the workers are the pool's spawner's.)
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
      std::ifstream children(task.path() / "children");
      for (long pid = 0; children >> pid;) out << pid << "\n";
    }
  }
  std::filesystem::rename(pids + ".tmp", pids);
  for (;;) ::pause();
}
