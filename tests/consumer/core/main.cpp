#include <cancellable/cancellable.hpp>

#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>

#include <iostream>
#include <string>
#include <vector>

// A result with a cereal serialize member, as a user would write one.
struct Report {
  std::string name;
  std::vector<int> values;
  template <class Archive>
  void serialize(Archive& archive) {
    archive(name, values);
  }
};

int main() {
  cancellable::CancellationToken token;
  auto future = cancellable::CancellableFuture::delayed(std::chrono::hours(1), [] { return 1; }, token);
  token.cancel();
  try {
    future.get();
    return 1;
  } catch (const cancellable::CancelledException&) {
    std::cout << "consumer: cancelled with CancelledException\n";
    if (token.has_cancellables()) return 1;
  }
  const Report report = cancellable::CancellableIsolate::run([] {
                          return Report{"squares", {1, 4, 9}};
                        }).get();
  std::cout << "consumer: isolate returned " << report.name << " " << report.values.size() << "\n";
  return report.values == std::vector<int>{1, 4, 9} ? 0 : 1;
}
