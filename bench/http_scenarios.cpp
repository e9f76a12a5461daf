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
//                             libcurl's easy handle, reused (kept alive), and
//                             the same handle driven on a thread of its own
//                             (libcurl_on_a_thread), as async wrappers do.
//                             Goal: p50 <= 1.0x libcurl_on_a_thread's p50.
//   http_download             a 256 MiB body on a kept-alive connection, plain
//                             and TLS: get(), send()+read_all(), and
//                             send()+read_chunk() dropping the pieces, beside
//                             libcurl's easy interface writing to a callback
//                             that drops the bytes (interleaved). Goal: p50 <=
//                             1.1x libcurl's, for get() and send()+read_all().
//                             Also libcurl appending to a string reserved to
//                             the body's size: the memory a body returned
//                             whole must be given.
//   http_concurrent           1,000 GETs of 16 KiB over 50 connections: 50
//                             chains of GETs on one Client, beside libcurl's
//                             multi interface with 50 connections at most.
//                             Goal: wall p50 <= 1.2x libcurl multi's.
#include <curl/curl.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <utility>
#include <functional>
#include <future>
#include <thread>

#include "bench/measure.hpp"
#include "cancellable/http.hpp"
#include "support/http_test_server.hpp"

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
  compare(row, floor);  // (The same design: a caller and an I/O thread.)
  row.goal = Goal{"p50 <= 1.0x libcurl_on_a_thread p50", *row.ratio_p50 <= 1.0};
  return {std::move(baseline), std::move(floor), std::move(row)};
}

// libcurl's easy interface, reused (kept alive), dropping the body.
// With `keep`, the body is appended to a string reserved to its size (what
// any client that returns the body in memory pays: on this VM, faulting in
// 256 MiB of fresh memory costs about as much as the transfer).
class CurlDropper {
 public:
  CurlDropper(const std::string& url, const std::string& ca_file) : curl_(curl_easy_init()) {
    curl_easy_setopt(curl_, CURLOPT_URL, url.c_str());
    if (!ca_file.empty()) curl_easy_setopt(curl_, CURLOPT_CAINFO, ca_file.c_str());
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, this);
    curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, +[](char* data, std::size_t size, std::size_t n, void* self) {
      auto& me = *static_cast<CurlDropper*>(self);
      me.bytes_ += size * n;
      if (me.keep_) me.body_.append(data, size * n);
      return size * n;
    });
  }
  ~CurlDropper() { curl_easy_cleanup(curl_); }
  std::size_t get(std::size_t keep = 0) {
    bytes_ = 0;
    keep_ = keep != 0;
    std::string().swap(body_);
    if (keep_) body_.reserve(keep);
    if (curl_easy_perform(curl_) != CURLE_OK) throw std::runtime_error("libcurl failed");
    return bytes_;
  }

 private:
  CURL* curl_;
  std::size_t bytes_ = 0;
  bool keep_ = false;
  std::string body_;
};

std::vector<Row> http_download(const Settings& settings) {
  const std::size_t size = std::size_t{256} << 20;
  const std::size_t samples = settings.quick ? 3 : 11;
  auto cert = test_http::make_certificate("IP:127.0.0.1");
  test_http::TempFile ca(cert.cert_pem);
  std::vector<Row> rows;
  for (bool tls : {false, true}) {
    test_http::Server plain_server;
    test_http::Server tls_server(cert);
    test_http::Server& server = tls ? tls_server : plain_server;
    const std::string url = server.url("/blob/" + std::to_string(size));
    const std::string suffix = tls ? "_tls" : "_plain";
    http::ClientOptions options;
    options.ca_file = ca.path();
    options.max_body_bytes = size;
    http::Client client(options);
    CurlDropper curl(url, ca.path());
    std::vector<double> theirs, kept, get, read_all, read_chunk;
    for (std::size_t i = 0; i < samples + 1; ++i) {  // (The first of each warms up: not kept.)
      auto start = Clock::now();
      const bool curl_ok = curl.get() == size;
      const double curl_us = us_between(start, Clock::now());
      start = Clock::now();
      const bool kept_ok = curl.get(size) == size;
      const double kept_us = us_between(start, Clock::now());
      start = Clock::now();
      // (Futures held, not temporaries: get() on a temporary copies its value.)
      auto full = client.get(url);
      const bool get_ok = full.get().body.size() == size;
      const double get_us = us_between(start, Clock::now());
      start = Clock::now();
      auto all = client.send(http::Request("GET", url)).get().read_all();
      const bool all_ok = all.get().size() == size;
      const double all_us = us_between(start, Clock::now());
      start = Clock::now();
      auto streamed = client.send(http::Request("GET", url)).get();
      std::size_t got = 0;
      while (auto piece = streamed.read_chunk().get()) got += piece->size();
      const double chunk_us = us_between(start, Clock::now());
      if (!curl_ok || !kept_ok || !get_ok || !all_ok || got != size) throw std::runtime_error("http_download: wrong size");
      if (i == 0) continue;
      theirs.push_back(curl_us);
      kept.push_back(kept_us);
      get.push_back(get_us);
      read_all.push_back(all_us);
      read_chunk.push_back(chunk_us);
    }
    if (server.connections() != 2) throw std::runtime_error("http_download: a connection was not kept alive");
    auto baseline = make_row("http_download", "libcurl_easy" + suffix, std::move(theirs));
    auto k = make_row("http_download", "libcurl_easy_to_string" + suffix, std::move(kept));
    compare(k, baseline);
    auto g = make_row("http_download", "get" + suffix, std::move(get));
    auto a = make_row("http_download", "send_read_all" + suffix, std::move(read_all));
    auto c = make_row("http_download", "send_read_chunk" + suffix, std::move(read_chunk));
    for (Row* row : {&g, &a, &c}) compare(*row, baseline);
    g.goal = Goal{"p50 <= 1.1x libcurl_easy" + suffix + " p50", *g.ratio_p50 <= 1.1};
    a.goal = Goal{"p50 <= 1.1x libcurl_easy" + suffix + " p50", *a.ratio_p50 <= 1.1};
    rows.push_back(std::move(baseline));
    rows.push_back(std::move(k));
    rows.push_back(std::move(g));
    rows.push_back(std::move(a));
    rows.push_back(std::move(c));
  }
  return rows;
}

// 1,000 GETs over at most 50 connections with libcurl's multi interface.
double curl_multi_1000(const std::string& url) {
  CURLM* multi = curl_multi_init();
  curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, 50L);
  curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, 50L);
  std::vector<CURL*> handles;
  std::size_t bytes = 0;
  auto start = Clock::now();
  for (int i = 0; i < 1000; ++i) {
    CURL* e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, url.c_str());
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &bytes);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, +[](char*, std::size_t size, std::size_t n, void* out) {
      *static_cast<std::size_t*>(out) += size * n;
      return size * n;
    });
    curl_multi_add_handle(multi, e);
    handles.push_back(e);
  }
  int running = 1;
  while (running) {
    curl_multi_perform(multi, &running);
    if (running) curl_multi_poll(multi, nullptr, 0, 1000, nullptr);
  }
  const double us = us_between(start, Clock::now());
  for (CURL* e : handles) {
    curl_multi_remove_handle(multi, e);
    curl_easy_cleanup(e);
  }
  curl_multi_cleanup(multi);
  if (bytes != 1000 * 16384) throw std::runtime_error("http_concurrent: libcurl got the wrong size");
  return us;
}

// 1,000 GETs as 50 chains of 20 on one Client (each chain one connection;
// each next GET is started where the last one completed, on the I/O thread).
Future<void> chain_of_gets(http::Client& client, const std::string& url, int n, std::atomic<std::size_t>& bytes) {
  for (int i = 0; i < n; ++i) {
    auto response = co_await client.get(url);
    bytes += response.body.size();
  }
}

double cancellable_1000(http::Client& client, const std::string& url) {
  std::atomic<std::size_t> bytes{0};
  auto start = Clock::now();
  std::vector<Future<void>> chains;
  for (int i = 0; i < 50; ++i) chains.push_back(chain_of_gets(client, url, 20, bytes));
  for (auto& c : chains) c.get();  // (Rethrows a failed GET.)
  const double us = us_between(start, Clock::now());
  if (bytes != 1000 * 16384) throw std::runtime_error("http_concurrent: wrong size");
  return us;
}

std::vector<Row> http_concurrent(const Settings& settings) {
  test_http::Server server;
  const std::string url = server.url("/bytes/16384");
  http::ClientOptions options;
  options.max_idle_per_host = 50;
  http::Client client(options);
  const std::size_t samples = settings.quick ? 3 : 15;
  std::vector<double> theirs, mine;
  for (std::size_t i = 0; i < samples + 1; ++i) {
    const double c = curl_multi_1000(url);
    const double m = cancellable_1000(client, url);
    if (i == 0) continue;
    theirs.push_back(c);
    mine.push_back(m);
  }
  auto baseline = make_row("http_concurrent", "libcurl_multi", std::move(theirs));
  auto row = make_row("http_concurrent", "cancellable_http", std::move(mine));
  compare(row, baseline);
  row.goal = Goal{"p50 <= 1.2x libcurl_multi p50", *row.ratio_p50 <= 1.2};
  return {std::move(baseline), std::move(row)};
}

const bool registered = [] {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  add_scenario({"http_cancel_to_exception", http_cancel_to_exception});
  add_scenario({"http_cancel_50", http_cancel_50});
  add_scenario({"curl_progress_cancel", curl_progress_cancel});
  add_scenario({"http_get_roundtrip", http_get_roundtrip});
  add_scenario({"http_download", http_download});
  add_scenario({"http_concurrent", http_concurrent});
  return true;
}();

}  // namespace
}  // namespace cancellable::bench
