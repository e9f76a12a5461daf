#include "cancellable/executor.hpp"

#include <catch2/catch.hpp>

#include <mutex>
#include <thread>
#include <vector>

#include "support/test_support.hpp"
#include "worker/test_seams.hpp"

using namespace cancellable;
using test_support::Event;
using test_support::ExecutorBlocker;

TEST_CASE("the default executor runs posted work on another thread", "[executor]") {
  Event done;
  std::thread::id ran_on;
  default_executor().post([&] {
    ran_on = std::this_thread::get_id();
    done.set();
  });
  REQUIRE(done.wait());
  CHECK(ran_on != std::this_thread::get_id());
}

TEST_CASE("the default executor has at least two threads", "[executor]") {
  CHECK(detail::default_executor_thread_count() >= 2);
}

TEST_CASE("microtasks are taken before ordinary work already queued", "[executor]") {
  const auto threads = detail::default_executor_thread_count();
  ExecutorBlocker blocker(threads);
  REQUIRE(blocker.wait_until_holding());

  std::mutex mutex;
  std::vector<int> order;
  Event all_done;
  auto record = [&](int id) {
    bool done;
    {
      std::lock_guard lock(mutex);
      order.push_back(id);
      done = order.size() == 4;
    }
    // After the unlock: once all_done is set, this test may return and
    // destroy the mutex.
    if (done) all_done.set();
  };
  default_executor().post([&] { record(1); });
  default_executor().post([&] { record(2); });
  detail::post_microtask([&] { record(10); });
  detail::post_microtask([&] { record(11); });
  // One thread free: the queue is drained in order of priority, then of posting.
  blocker.release_one(0);
  REQUIRE(all_done.wait());
  blocker.release_all();
  CHECK(order == std::vector<int>{10, 11, 1, 2});
}
