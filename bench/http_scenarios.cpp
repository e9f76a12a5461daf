// The HTTP client's scenarios, against a server on 127.0.0.1 started here
// (the tests' server), with Debian's libcurl as the peer baseline. Linked
// into cancellable-bench only (the command does not carry libcurl); they
// register themselves with scenarios().
//
//   http_cancel_to_exception  a GET blocked on a server that never answers;
//                             cancel() -> the waiter in get() has the
//                             exception. Goal: p99 <= 1.5x std_promise p99
//                             (interleaved).
//   http_cancel_50            one token, 50 GETs in flight: cancel() -> all 50
//                             futures failed.
//   curl_progress_cancel      the same single request with libcurl's easy
//                             interface, aborted from its progress callback
//                             (what cpr does): a flag set -> curl_easy_perform
//                             returned; beside this library's cancel of the
//                             same request. The headline: libcurl's ratio.
//   http_get_roundtrip        a small GET on a kept-alive connection; baseline
//                             libcurl's easy handle, reused (kept alive).
//                             Goal: p50 <= 1.2x libcurl's p50. Also the same
//                             handle driven on a thread of its own
//                             (libcurl_on_a_thread), as async wrappers do.
#include <curl/curl.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <utility>
#include <future>
#include <thread>

#include "bench/measure.hpp"
#include "cancellable/http.hpp"
#include "helpers/http_test_server.hpp"

namespace cancellable::bench {
namespace {

// A request in flight: the server has read its headers and holds it.
Future<http::Response> held_request(http::Client& client, test_http::Server& server, const CancellationToken& token) {
  const std::size_t seen = server.requests();
  auto future = client.get(server.url("/hold"), token);
  server.wait_for_requests(seen + 1);
  return future;
}

std::vector<Row> http_cancel_to_exception(const Settings& settings) {
  test_http::Server server;
  http::Client client;
  Waiter waiter;
  const std::size_t samples = settings.quick ? 100 : 1000;
  std::vector<double> promise, mine;
  for (std::size_t i = 0; i < samples; ++i) {
    CancellationToken token;
    auto future = held_request(client, server, token);
    mine.push_back(wakeup_of(waiter, future, [&] { token.cancel(); }));
    promise.push_back(promise_wakeup(waiter));
  }
  auto baseline = make_row("http_cancel_to_exception", "std_promise", std::move(promise));
  auto row = make_row("http_cancel_to_exception", "cancellable_http", std::move(mine));
  set_p99_ratio_goal(row, baseline, 1.5);
  return {std::move(baseline), std::move(row)};
}

std::vector<Row> http_cancel_50(const Settings& settings) {
  test_http::Server server;
  http::Client client;
  const std::size_t samples = settings.quick ? 10 : 100;
  std::vector<double> mine;
  for (std::size_t i = 0; i < samples; ++i) {
    CancellationToken token;
    std::vector<Future<http::Response>> futures;
    const std::size_t seen = server.requests();
    for (int r = 0; r < 50; ++r) futures.push_back(client.get(server.url("/hold"), token));
    server.wait_for_requests(seen + 50);
    spin_for(200us);
    const auto start = Clock::now();
    token.cancel();
    for (auto& f : futures) f.wait();
    mine.push_back(us_between(start, Clock::now()));
  }
  return {make_row("http_cancel_50", "cancellable_http", std::move(mine))};
}

std::size_t discard(char*, std::size_t size, std::size_t count, void*) { return size * count; }

// One GET with libcurl's easy interface on its own thread, aborted from the
// progress callback once `abort` is set; returns the microseconds from
// setting it to curl_easy_perform's return.
double curl_progress_cancel_once(test_http::Server& server) {
  std::atomic<bool> abort{false};
  std::promise<Clock::time_point> returned;
  auto returned_at = returned.get_future();
  const std::size_t seen = server.requests();
  std::thread performer([&] {
    CURL* curl = curl_easy_init();
    const std::string url = server.url("/hold");
    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &abort);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION,
                     +[](void* flag, curl_off_t, curl_off_t, curl_off_t, curl_off_t) -> int {
                       return static_cast<std::atomic<bool>*>(flag)->load() ? 1 : 0;
                     });
    curl_easy_perform(curl);  // CURLE_ABORTED_BY_CALLBACK
    returned.set_value(Clock::now());
    curl_easy_cleanup(curl);
  });
  server.wait_for_requests(seen + 1);
  spin_for(200us);
  const auto start = Clock::now();
  abort.store(true);
  const double us = us_between(start, returned_at.get());
  performer.join();
  return us;
}

std::vector<Row> curl_progress_cancel(const Settings& settings) {
  test_http::Server server;
  http::Client client;
  Waiter waiter;
  // libcurl looks at its progress callback about once a second while a
  // transfer is idle: half a second a sample on average.
  const std::size_t samples = settings.quick ? 5 : 40;
  std::vector<double> curl, mine;
  for (std::size_t i = 0; i < samples; ++i) {
    curl.push_back(curl_progress_cancel_once(server));
    CancellationToken token;
    auto future = held_request(client, server, token);
    mine.push_back(wakeup_of(waiter, future, [&] { token.cancel(); }));
  }
  // The headline: how many times longer libcurl takes (its row's ratios,
  // against this library's row of the same run).
  auto ours = make_row("curl_progress_cancel", "cancellable_http", std::move(mine));
  auto theirs = make_row("curl_progress_cancel", "libcurl_progress_callback", std::move(curl));
  compare(theirs, ours);
  return {std::move(ours), std::move(theirs)};
}

// A libcurl easy handle kept alive between GETs of one URL.
class CurlGetter {
 public:
  explicit CurlGetter(const std::string& url) : curl_(curl_easy_init()) {
    curl_easy_setopt(curl_, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &body_);
    curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, +[](char* data, std::size_t size, std::size_t n, void* out) {
      static_cast<std::string*>(out)->append(data, size * n);
      return size * n;
    });
  }
  ~CurlGetter() { curl_easy_cleanup(curl_); }
  const std::string& get() {
    body_.clear();
    curl_easy_perform(curl_);
    return body_;
  }

 private:
  CURL* curl_;
  std::string body_;
};

// libcurl on a thread of its own, each GET handed over and its body handed
// back through std::promise, as an asynchronous wrapper of libcurl (cpr's
// GetAsync) does: the two thread hand-offs any client with an I/O thread
// pays on top of the blocking call.
class CurlOnAThread {
 public:
  explicit CurlOnAThread(const std::string& url) : getter_(url), thread_([this] { loop(); }) {}
  ~CurlOnAThread() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }
  std::string get() {
    std::promise<std::string> done;
    auto body = done.get_future();
    {
      std::lock_guard lock(mutex_);
      job_ = &done;
    }
    wake_.notify_one();
    return body.get();
  }

 private:
  void loop() {
    for (;;) {
      std::promise<std::string>* job;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || job_; });
        if (stop_) return;
        job = std::exchange(job_, nullptr);
      }
      job->set_value(getter_.get());
    }
  }

  CurlGetter getter_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::promise<std::string>* job_ = nullptr;
  bool stop_ = false;
  std::thread thread_;
};

std::vector<Row> http_get_roundtrip(const Settings& settings) {
  test_http::Server server;
  http::Client client;
  const std::string url = server.url("/hello");
  CurlGetter curl(url);
  CurlOnAThread curl_thread(url);
  const std::size_t samples = settings.quick ? 200 : 3000;
  std::vector<double> theirs, threaded, mine;
  for (std::size_t i = 0; i < samples + 20; ++i) {  // (The first 20 of each warm up: not kept.)
    auto start = Clock::now();
    const bool curl_ok = curl.get() == "hello";
    const double curl_us = us_between(start, Clock::now());
    start = Clock::now();
    const bool threaded_ok = curl_thread.get() == "hello";
    const double threaded_us = us_between(start, Clock::now());
    start = Clock::now();
    const auto response = client.get(url).get();
    const double my_us = us_between(start, Clock::now());
    if (!curl_ok || !threaded_ok || response.body != "hello")
      throw std::runtime_error("http_get_roundtrip: wrong body");
    if (i < 20) continue;
    theirs.push_back(curl_us);
    threaded.push_back(threaded_us);
    mine.push_back(my_us);
  }
  if (server.connections() != 3) throw std::runtime_error("http_get_roundtrip: a connection was not kept alive");
  auto baseline = make_row("http_get_roundtrip", "libcurl_easy", std::move(theirs));
  auto floor = make_row("http_get_roundtrip", "libcurl_on_a_thread", std::move(threaded));
  compare(floor, baseline);
  auto row = make_row("http_get_roundtrip", "cancellable_http", std::move(mine));
  compare(row, baseline);
  row.goal = Goal{"p50 <= 1.2x libcurl_easy p50", *row.ratio_p50 <= 1.2};
  return {std::move(baseline), std::move(floor), std::move(row)};
}

const bool registered = [] {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  add_scenario({"http_cancel_to_exception", http_cancel_to_exception});
  add_scenario({"http_cancel_50", http_cancel_50});
  add_scenario({"curl_progress_cancel", curl_progress_cancel});
  add_scenario({"http_get_roundtrip", http_get_roundtrip});
  return true;
}();

}  // namespace
}  // namespace cancellable::bench
