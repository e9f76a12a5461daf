// Ctrl-C for a command-line program: a SignalCancellationToken, made first
// thing in main, cancels a runaway computation in a worker process, which is
// killed at once; the exit status is 128 + the signal, as a shell expects.
// (--interrupt sends the program SIGINT itself once the worker runs, for the
// tests.)
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <iostream>

#include "cancellable/cancellable.hpp"

long runaway() {
  volatile long steps = 0;
  for (;;) steps = steps + 1;
}

int main(int argc, char** argv) {
  cancellable::SignalCancellationToken interrupt;  // SIGINT and SIGTERM, before any thread
  std::cout << "computing; press Ctrl-C to stop" << std::endl;
  auto isolate = cancellable::CancellableIsolate::spawn(runaway, interrupt);
  if (argc == 2 && std::strcmp(argv[1], "--interrupt") == 0) ::kill(::getpid(), SIGINT);
  try {
    isolate.future().get();
  } catch (const cancellable::CancelledException& e) {
    std::cout << "stopped: " << e.what() << "; worker " << isolate.exited().get().str() << std::endl;
    return 128 + interrupt.signal();
  }
  return 0;
}
