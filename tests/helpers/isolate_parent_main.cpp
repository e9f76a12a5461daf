// Helper for the parent-death test: starts an isolate that runs for ever,
// prints the isolate's process id, and waits to be killed.
#include <unistd.h>

#include <cstdio>

#include "cancellable/isolate.hpp"

int main() {
  auto isolate = cancellable::CancellableIsolate::spawn([] {
    for (;;) ::pause();
    return 0;
  });
  std::printf("%d\n", static_cast<int>(isolate.pid()));
  std::fflush(stdout);
  for (;;) ::pause();
}
