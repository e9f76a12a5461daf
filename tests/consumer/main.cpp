#include <cancellable/cancellable.hpp>

#include <iostream>

int main() {
  cancellable::CancellationToken token;
  auto future = cancellable::CancellableFuture::delayed(std::chrono::hours(1), [] { return 1; }, token);
  token.cancel();
  try {
    future.get();
  } catch (const cancellable::CancelledException&) {
    std::cout << "consumer: cancelled with CancelledException\n";
    return token.has_cancellables() ? 1 : 0;
  }
  return 1;
}
