// Ctrl-C for a command-line program: a SignalCancellationToken, made first
// thing in main, cancels a runaway computation in a worker process, which is
// killed at once; the exit status is 128 + the signal, as a shell expects.
// (--interrupt-after-ms N sends the program SIGINT itself, for the tests.)
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <thread>

#include "cancellable/cancellable.hpp"

long runaway() {
  volatile long steps = 0;
  for (;;) steps = steps + 1;
}

int main(int argc, char** argv) {
  cancellable::SignalCancellationToken interrupt;  // SIGINT and SIGTERM, before any thread
  if (argc == 3 && std::strcmp(argv[1], "--interrupt-after-ms") == 0) {
    std::thread([ms = std::atoi(argv[2])] {
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      ::kill(::getpid(), SIGINT);
    }).detach();
  }
  std::cout << "computing; press Ctrl-C to stop" << std::endl;
  auto isolate = cancellable::CancellableIsolate::spawn(runaway, interrupt);
  try {
    isolate.future().get();
  } catch (const cancellable::CancelledException& e) {
    std::cout << "stopped: " << e.what() << "; worker " << isolate.exited().get().str() << std::endl;
    return 128 + interrupt.signal();
  }
  return 0;
}
