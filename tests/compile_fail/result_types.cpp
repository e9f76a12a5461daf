// Result (and pool argument) types that must not cross a process boundary
// as raw bytes. Built
// by tests/compile_fail/run.cmake with one CASE defined at a time: every case
// but `plain_struct` and `serializable_struct` must fail to compile with the
// codec's message.
#include <span>
#include <string_view>
#include <vector>

#include "cancellable/isolate.hpp"
#include "cancellable/pool.hpp"
#include "cancellable/task.hpp"

namespace {

struct Named {
  int id;
  const char* name;
};

struct Plain {
  int id;
  double score;
  std::array<float, 3> position;
  struct Inner {
    long count;
    bool flag;
  } inner;
};

struct WithView {
  std::string_view text;
};

struct Serializable {
  std::string name;
  template <class Archive>
  void serialize(Archive& archive) {
    archive(name);
  }
};

}  // namespace

int main() {
  using cancellable::CancellableIsolate;
#if defined(CASE_string_view)
  auto f = CancellableIsolate::run([] { return std::string_view("worker memory"); });
#elif defined(CASE_span)
  static int data[4] = {1, 2, 3, 4};
  auto f = CancellableIsolate::run([] { return std::span<int>(data); });
#elif defined(CASE_struct_with_pointer)
  auto f = CancellableIsolate::run([] { return Named{1, "worker memory"}; });
#elif defined(CASE_struct_with_view)
  auto f = CancellableIsolate::run([] { return WithView{"worker memory"}; });
#elif defined(CASE_raw_pointer)
  static int value = 1;
  auto f = CancellableIsolate::run([] { return &value; });
#elif defined(CASE_vector_of_views)
  auto f = CancellableIsolate::run([] { return std::vector<std::string_view>{"a"}; });
#elif defined(CASE_plain_struct)
  auto f = CancellableIsolate::run([] { return Plain{}; });
#elif defined(CASE_serializable_struct)
  auto f = CancellableIsolate::run([] { return Serializable{"copied"}; });
// A pool task's arguments follow the same rules (never run: compiled only).
#elif defined(CASE_argument_struct_with_pointer)
  constexpr cancellable::Task<int(Named)> task{"compile_fail.named"};
  auto f = static_cast<cancellable::WorkerPool*>(nullptr)->run(task, Named{1, "parent memory"});
#elif defined(CASE_argument_string_view)
  constexpr cancellable::Task<int(std::string_view)> task{"compile_fail.view"};
  auto f = static_cast<cancellable::WorkerPool*>(nullptr)->run(task, std::string_view("parent memory"));
#elif defined(CASE_argument_plain_struct)
  constexpr cancellable::Task<int(Plain, std::vector<Plain>)> task{"compile_fail.plain"};
  auto f = static_cast<cancellable::WorkerPool*>(nullptr)->run(task, Plain{}, std::vector<Plain>{});
#else
#error "define one CASE_..."
#endif
  (void)f;
}
