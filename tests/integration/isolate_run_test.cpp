#include "cancellable/isolate.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/interprocess/shared_memory_object.hpp>

#include <array>
#include <cstring>
#include <memory>
#include <atomic>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cancellable/exceptions.hpp"
#include "support/process_support.hpp"
#include "support/test_support.hpp"
#include "worker/protocol/result_channel.hpp"
#include "worker/test_seams.hpp"

using namespace cancellable;

namespace {

enum class Colour : std::uint8_t { red = 1, green = 2 };

struct Point {  // trivially copyable, no serialize: copied as bytes
  double x;
  double y;
  friend bool operator==(const Point&, const Point&) = default;
};

struct Summary {  // a user type with a cereal serialize member
  std::string name;
  std::vector<int> counts;
  std::map<std::string, double> weights;
  template <class Archive>
  void serialize(Archive& archive) {
    archive(name, counts, weights);
  }
  friend bool operator==(const Summary&, const Summary&) = default;
};

std::atomic<int> forks{0};
pid_t counting_fork() {
  forks.fetch_add(1);
  return ::fork();
}

template <class F>
auto run_in_process(F&& fn) {
  IsolateOptions options;
  options.backend = Backend::process;
  auto isolate = CancellableIsolate::spawn(std::forward<F>(fn), CancellationToken::none(), options);
  REQUIRE(isolate.future().wait_for(test_support::kDeadline) == std::future_status::ready);
  CHECK(isolate.backend() == Backend::process);
  return isolate.future().get();
}

}  // namespace

TEST_CASE("an isolate runs its work in a forked process and returns the result", "[isolate]") {
  auto isolate = CancellableIsolate::spawn([] { return ::getpid(); });
  const pid_t worker = isolate.future().get();
  CHECK(worker != ::getpid());
  CHECK(isolate.pid() == worker);
  CHECK(isolate.backend() == Backend::process);
  REQUIRE(isolate.exited().wait_for(test_support::kDeadline) == std::future_status::ready);
  CHECK(isolate.exited().get() == ProcessExit{ProcessExit::Kind::exited, 0, 0});
}

TEST_CASE("the work sees a copy of the parent's memory without serialization", "[isolate]") {
  std::vector<int> data(1000);
  for (int i = 0; i < 1000; ++i) data[i] = i;
  const int* address = data.data();
  auto sum = CancellableIsolate::run([&] {
    // Same address, same contents: copy-on-write, nothing was sent.
    long total = 0;
    for (int i = 0; i < 1000; ++i) total += address[i];
    return total;
  });
  CHECK(sum.get() == 999 * 1000 / 2);
}

TEST_CASE("results of every supported type cross the process boundary", "[isolate][codec]") {
  SECTION("void") {
    IsolateOptions options;
    options.backend = Backend::process;
    auto f = CancellableIsolate::run([] {}, CancellationToken::none(), options);
    static_assert(std::is_same_v<decltype(f), Future<void>>);
    CHECK_NOTHROW(f.get());
  }
  SECTION("numbers and enums") {
    CHECK(run_in_process([] { return 42; }) == 42);
    CHECK(run_in_process([] { return 2.5; }) == 2.5);
    CHECK(run_in_process([] { return Colour::green; }) == Colour::green);
  }
  SECTION("strings, vectors and arrays") {
    CHECK(run_in_process([] { return std::string("héllo \"world\"\n"); }) == "héllo \"world\"\n");
    CHECK(run_in_process([] { return std::vector<int>{1, 2, 3}; }) == std::vector<int>{1, 2, 3});
    CHECK(run_in_process([] { return std::vector<std::string>{"a", "", "c"}; }) ==
          std::vector<std::string>{"a", "", "c"});
    CHECK(run_in_process([] { return std::array<int, 3>{7, 8, 9}; }) == std::array<int, 3>{7, 8, 9});
  }
  SECTION("maps, optionals, pairs and tuples") {
    using Map = std::map<std::string, int>;
    CHECK(run_in_process([] { return Map{{"a", 1}, {"b", 2}}; }) == Map{{"a", 1}, {"b", 2}});
    using Hash = std::unordered_map<int, std::string>;
    CHECK(run_in_process([] { return Hash{{1, "x"}, {2, "y"}}; }) == Hash{{1, "x"}, {2, "y"}});
    CHECK(run_in_process([] { return std::optional<int>(5); }) == std::optional<int>(5));
    CHECK(run_in_process([] { return std::optional<std::string>(); }) == std::nullopt);
    CHECK(run_in_process([] { return std::pair<int, std::string>(1, "one"); }) ==
          std::pair<int, std::string>(1, "one"));
    CHECK(run_in_process([] { return std::tuple<int, double, std::string>(1, 2.0, "3"); }) ==
          std::tuple<int, double, std::string>(1, 2.0, "3"));
  }
  SECTION("nested combinations") {
    using Nested = std::map<std::string, std::vector<std::pair<int, std::optional<std::string>>>>;
    const Nested expected{{"k", {{1, "v"}, {2, std::nullopt}}}, {"empty", {}}};
    CHECK(run_in_process([&] { return expected; }) == expected);
  }
  SECTION("user structs") {
    CHECK(run_in_process([] { return Point{1.5, -2}; }) == Point{1.5, -2});
    CHECK(run_in_process([] { return std::vector<Point>{{1, 2}, {3, 4}}; }) ==
          std::vector<Point>{{1, 2}, {3, 4}});
    const Summary expected{"s", {1, 2}, {{"w", 0.5}}};
    CHECK(run_in_process([&] { return expected; }) == expected);
  }
}

TEST_CASE("a large result travels through shared memory intact", "[isolate][codec]") {
  constexpr std::size_t kBytes = 48u << 20;
  auto result = CancellableIsolate::run([] {
    std::vector<std::uint8_t> big(kBytes);
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::uint8_t>(i * 31 + 7);
    return big;
  }).get();
  REQUIRE(result.size() == kBytes);
  bool intact = true;
  for (std::size_t i = 0; i < result.size(); ++i) {
    intact = intact && result[i] == static_cast<std::uint8_t>(i * 31 + 7);
  }
  CHECK(intact);
  CHECK(process_support::count_result_shm() == 0);
}

TEST_CASE("a result larger than max_result_bytes fails with ResultTooLarge giving both sizes",
          "[isolate][limits]") {
  IsolateOptions options;
  options.max_result_bytes = 1000;
  auto f = CancellableIsolate::run([] { return std::string(5000, 'x'); }, CancellationToken::none(),
                                   options);
  try {
    (void)f.get();
    FAIL("expected ResultTooLarge");
  } catch (const ResultTooLarge& e) {
    CHECK(e.limit_bytes() == 1000);
    CHECK(e.result_bytes() == 5000 + 8);  // cereal's size prefix, then the bytes
    CHECK(std::string(e.what()).find("5008 bytes") != std::string::npos);
    CHECK(std::string(e.what()).find("1000 bytes") != std::string::npos);
  }
}

TEST_CASE("cancellable_compute runs callback(message) in an isolate", "[isolate]") {
  auto f = cancellable_compute([](const std::string& s) { return s.size() + ::getpid() * 0; },
                               std::string("message"));
  CHECK(f.get() == 7);
}

TEST_CASE("a pre-cancelled token creates no process at all", "[isolate]") {
  CancellationToken token;
  token.cancel();
  forks = 0;
  detail::set_fork_function(counting_fork);
  auto isolate = CancellableIsolate::spawn([] { return 1; }, token);
  detail::set_fork_function(nullptr);
  REQUIRE(isolate.future().is_ready());
  CHECK(isolate.future().state()->error() == token.exception());
  CHECK(forks.load() == 0);
  CHECK(isolate.pid() == 0);
  CHECK(isolate.exited().is_ready());
}

TEST_CASE("an isolate leaves nothing attached to its token once it finished", "[isolate]") {
  CancellationToken token;
  auto isolate = CancellableIsolate::spawn([] { return 3; }, token);
  CHECK(isolate.future().get() == 3);
  CHECK_FALSE(token.has_cancellables());
}

TEST_CASE("invalid isolate options are rejected with std::invalid_argument", "[isolate][options]") {
  IsolateOptions negative_timeout;
  negative_timeout.timeout = std::chrono::milliseconds(-1);
  CHECK_THROWS_AS(CancellableIsolate::run([] { return 1; }, CancellationToken::none(), negative_timeout),
                  std::invalid_argument);
  IsolateOptions zero_cpu;
  zero_cpu.cpu_time_limit = std::chrono::seconds(0);
  CHECK_THROWS_AS(CancellableIsolate::run([] { return 1; }, CancellationToken::none(), zero_cpu),
                  std::invalid_argument);
  IsolateOptions busy_progress;
  busy_progress.on_progress = [](const Progress&) {};
  busy_progress.progress_interval = std::chrono::milliseconds(0);
  try {
    (void)CancellableIsolate::run([] { return 1; }, CancellationToken::none(), busy_progress);
    FAIL("expected std::invalid_argument");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()) == "IsolateOptions::progress_interval must be positive");
  }
}

TEST_CASE("result objects left by a crashed parent are swept", "[isolate][shm]") {
  // A process id that no longer exists: a child that has exited and been reaped.
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);
  const std::string name = "cancellable." + std::to_string(dead) + ".0.stale";
  {
    namespace bip = boost::interprocess;
    bip::permissions owner_only;
    owner_only.set_permissions(0600);
    bip::shared_memory_object stale(bip::create_only, name.c_str(), bip::read_write, owner_only);
    stale.truncate(4096);
  }
  REQUIRE(process_support::count_entries("/dev/shm", name) == 1);
  detail::sweep_stale_result_shm();
  CHECK(process_support::count_entries("/dev/shm", name) == 0);
}

TEST_CASE("result objects are created private to the user, mode 0600", "[isolate][shm]") {
  auto block = std::make_unique<detail::ControlBlock>();
  const std::string name = detail::make_result_shm_name();
  std::strncpy(block->shm_name, name.c_str(), sizeof block->shm_name - 1);
  {
    detail::ChildChannelImpl channel(block.get(), {std::size_t{1} << 30, std::nullopt});
    const std::string big(detail::InlinePayload::capacity() + 1, 'x');  // outgrows the inline area
    channel.result_stream().write(big.data(), static_cast<std::streamsize>(big.size()));
    channel.commit_result();
  }
  struct stat st {};
  REQUIRE(::stat(("/dev/shm/" + name).c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(st.st_uid == ::geteuid());
  {
    detail::ResultReader reader(block.get(), name, std::size_t{1} << 30);
    CHECK(reader.outcome() == detail::Outcome::value);
    CHECK(reader.view().size == detail::InlinePayload::capacity() + 1);
  }
  // The reader removed it.
  CHECK(::stat(("/dev/shm/" + name).c_str(), &st) != 0);
}

TEST_CASE("the parent acts on its own copy of a result's name and size, not on what the worker wrote",
          "[isolate][shm]") {
  auto block = std::make_unique<detail::ControlBlock>();
  const std::string name = detail::make_result_shm_name();
  const std::string victim = detail::make_result_shm_name();
  std::strncpy(block->shm_name, name.c_str(), sizeof block->shm_name - 1);
  {
    detail::ChildChannelImpl channel(block.get(), {std::size_t{1} << 30, std::nullopt});
    const std::string big(detail::InlinePayload::capacity() + 1, 'x');
    channel.result_stream().write(big.data(), static_cast<std::streamsize>(big.size()));
    channel.commit_result();
  }
  // Another object of this user that a worker would like removed.
  const int fd = ::shm_open(("/" + victim).c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  REQUIRE(fd >= 0);
  ::close(fd);
  // The worker rewrites the name the parent will use, and claims a size
  // past the run's limit.
  std::strncpy(block->shm_name, victim.c_str(), sizeof block->shm_name - 1);
  SECTION("the name") {
    detail::ResultReader reader(block.get(), name, std::size_t{1} << 30);
    CHECK(reader.view().size == detail::InlinePayload::capacity() + 1);
    struct stat st {};
    CHECK(::stat(("/dev/shm/" + victim).c_str(), &st) == 0);  // untouched
    CHECK(::stat(("/dev/shm/" + name).c_str(), &st) != 0);    // the real one, removed
  }
  SECTION("the size") {
    block->payload_bytes.store(std::uint64_t{1} << 40);
    CHECK_THROWS_AS(detail::ResultReader(block.get(), name, std::size_t{1} << 20), IsolateError);
    detail::remove_result_shm(name.c_str());
  }
  detail::remove_result_shm(victim.c_str());
}
