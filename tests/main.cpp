// Catch2's main, after a chance to serve as a WorkerPool worker: a test
// binary may be its own pool's worker program (with the tasks it registers).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "cancellable/task.hpp"

int main(int argc, char* argv[]) {
  cancellable::worker_main(argc, argv);
  return Catch::Session().run(argc, argv);
}
