// The HTTP client against real servers on 127.0.0.1 (support/http_test_server).
#include "cancellable/http.hpp"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <memory>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "cancellable/exceptions.hpp"
#include "cancellable/task_group.hpp"
#include "cancellable/when.hpp"
#include "cancellable/timeout_cancellation_token.hpp"
#include "support/http_support.hpp"
#include "support/http_test_server.hpp"

using namespace std::chrono_literals;
using cancellable::CancellationToken;
using cancellable::CancelledException;
using cancellable::http::Client;
using cancellable::http::ClientOptions;
using cancellable::http::HttpError;
using cancellable::http::Request;
using Kind = cancellable::http::HttpError::Kind;
using test_http::error_kind;
using test_http::error_text;
using test_http::eventually;
using test_http::thread_name_list;
using test_http::threads_named;

namespace {

int count_entries(const char* dir) {
  int n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

int lookup_threads() { return threads_named("cancellable-dns"); }

bool no_lookup_threads() {
  return eventually([] { return lookup_threads() == 0; });
}

// The same, for a failure's message.
std::string thread_names() {
  std::string names;
  for (const auto& name : thread_name_list()) names += name + " ";
  return names;
}

// A thread's state letter in /proc (R running, S sleeping, ...).
char thread_state(pid_t tid) {
  std::ifstream stat("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::string line;
  std::getline(stat, line);
  auto close = line.rfind(')');  // (The name may hold spaces.)
  return close == std::string::npos || close + 2 >= line.size() ? '?' : line[close + 2];
}

std::uint16_t closed_port() {
  test_http::Server server;  // Bound, then gone: nobody listens there afterwards.
  return server.port();
}

}  // namespace

TEST_CASE("A GET returns the status, reason, headers and body") {
  test_http::Server server;
  Client client;
  auto response = client.get(server.url("/hello")).get();
  CHECK(response.status == 200);
  CHECK(response.reason == "OK");
  CHECK(response.body == "hello");
  CHECK(response.headers.get("content-length") == "5");
  CHECK(response.url == server.url("/hello"));
  CHECK(client.read(server.url("/hello")).get() == "hello");
  auto bytes = client.read_bytes(server.url("/bytes/3")).get();
  CHECK(bytes == std::vector<std::uint8_t>{'x', 'x', 'x'});
}

TEST_CASE("Every method sends its name, its body and the client's headers") {
  test_http::Server server;
  Client client;
  auto url = server.url("/echo");
  CHECK(client.post(url, "posted").get().body == "posted");
  CHECK(client.post(url, "p").get().headers.get("x-method") == "POST");
  CHECK(client.put(url, "put").get().headers.get("x-method") == "PUT");
  CHECK(client.patch(url, "patched").get().body == "patched");
  CHECK(client.del(url).get().headers.get("x-method") == "DELETE");
  auto head = client.head(url).get();
  CHECK(head.status == 200);
  CHECK(head.body.empty());
  auto r = client.get(url, CancellationToken::none(), {{"X-Test", "42"}}).get();
  CHECK(r.headers.get("x-seen-x-test") == "42");
  CHECK(r.headers.get("x-seen-user-agent") == "cancellable-http");
  CHECK(r.headers.get("x-seen-accept-encoding") == "gzip, deflate");
}

TEST_CASE("A 404 is a response, and read() turns it into an HttpStatusError") {
  test_http::Server server;
  Client client;
  auto response = client.get(server.url("/status/404")).get();
  CHECK(response.status == 404);
  CHECK(response.body == "status 404");
  auto body = client.read(server.url("/status/404"));
  CHECK_THROWS_AS(body.get(), cancellable::http::HttpStatusError);
  CHECK_THAT(error_text(body), Catch::Contains("status 404"));
}

TEST_CASE("Redirects are followed to the end of a chain, and one too many is an error") {
  test_http::Server server;
  Client client;
  auto response = client.get(server.url("/redirect/3")).get();
  CHECK(response.status == 200);
  CHECK(response.body == "arrived");
  CHECK(response.url == server.url("/redirect/0"));
  CHECK(error_kind(client.get(server.url("/redirect-loop"))) == Kind::too_many_redirects);

  ClientOptions options;
  options.max_redirects = 2;
  Client strict(options);
  CHECK(strict.get(server.url("/redirect/2")).get().body == "arrived");
  CHECK(error_kind(strict.get(server.url("/redirect/3"))) == Kind::too_many_redirects);
}

TEST_CASE("Gzip and deflate bodies are decoded") {
  test_http::Server server;
  Client client;
  CHECK(client.get(server.url("/gzip")).get().body == test_http::compressed_route_text());
  CHECK(client.get(server.url("/deflate")).get().body == test_http::compressed_route_text());
  ClientOptions raw;
  raw.decompress = false;
  Client undecoded(raw);
  CHECK(undecoded.get(server.url("/gzip")).get().body != test_http::compressed_route_text());
}

TEST_CASE("A kept-alive connection is reused for the next request to the same server") {
  test_http::Server server;
  Client client;
  for (int i = 0; i < 5; ++i) CHECK(client.get(server.url("/hello")).get().body == "hello");
  CHECK(server.connections() == 1);
  CHECK(client.open_connections() == 1);
}

TEST_CASE("A pre-cancelled token opens no connection and fails with the token's exception") {
  test_http::Server server;
  Client client;
  CancellationToken token;
  token.cancel();
  auto f = client.get(server.url("/hello"), token);
  REQUIRE(f.is_ready());
  CHECK(f.exception() == token.exception());
  auto bad = client.get("not a url", token);
  CHECK(bad.exception() == token.exception());
  CHECK(client.get(server.url("/hello")).get().body == "hello");  // (Flushes the client's queue.)
  CHECK(server.connections() == 1);
  CHECK_FALSE(token.has_cancellables());
}

TEST_CASE("Cancelled while waiting for headers, the future fails with the token's exception and the connection closes") {
  test_http::Server server;
  Client client;
  CancellationToken token;
  auto f = client.get(server.url("/hold"), token);
  server.wait_for_requests(1);
  REQUIRE_FALSE(f.is_ready());
  token.cancel();
  REQUIRE(f.is_ready());  // Failed inside cancel().
  CHECK(f.exception() == token.exception());
  CHECK_FALSE(token.has_cancellables());
  // The next request runs after the teardown on the client's thread.
  CHECK(client.get(server.url("/hello")).get().body == "hello");
  CHECK(client.open_connections() == 1);
  CHECK(server.connections() == 2);
}

TEST_CASE("A task group's join completes only once its cancelled requests' connections are closed") {
  test_http::Server server;
  Client client;
  cancellable::TaskGroup group;
  std::vector<cancellable::Future<cancellable::http::Response>> responses;
  for (int i = 0; i < 3; ++i) {
    responses.push_back(group.spawn([&](const CancellationToken& token) {
      Request request;
      request.url = server.url("/hold");
      return client.start(std::move(request), token);
    }));
  }
  server.wait_for_requests(3);
  group.cancel();
  for (auto& r : responses) {
    REQUIRE(r.is_ready());  // Failed inside cancel()...
    CHECK_THROWS_AS(r.get(), CancelledException);
  }
  CHECK_THROWS_AS(group.join().get(), CancelledException);
  CHECK(client.open_connections() == 0);  // ...and join() waited for the closes.
}

TEST_CASE("Three requests under one token are waited for together, and one cancel fails them all") {
  test_http::Server server;
  Client client;
  CancellationToken token;
  auto all = cancellable::when_all(client.read(server.url("/hello"), token), client.read(server.url("/hello"), token),
                                   client.read(server.url("/hello"), token));
  auto [a, b, c] = all.get();
  CHECK(a + b + c == "hellohellohello");
  std::vector<cancellable::Future<std::string>> held;
  for (int i = 0; i < 3; ++i) held.push_back(client.read(server.url("/hold"), token));
  auto waiting = cancellable::when_all(held);
  server.wait_for_requests(6);
  token.cancel();
  REQUIRE(waiting.is_ready());
  CHECK(waiting.exception() == token.exception());
  CHECK_FALSE(token.has_cancellables());
}

TEST_CASE("Cancelled while the body streams, reads fail with the token's exception; at most 64 KiB came after the abort") {
  test_http::Server server;
  Client client;
  CancellationToken token;
  auto response = client.send(Request("GET", server.url("/endless")), token).get();
  CHECK(response.status == 200);
  std::size_t received = 0;
  while (received < 1000) received += response.read_chunk().get().value().size();
  token.cancel();
  std::size_t after = 0;
  for (int i = 0; i < 100; ++i) {
    auto chunk = response.read_chunk();
    try {
      after += chunk.get().value().size();
    } catch (const CancelledException&) {
      CHECK(chunk.exception() == token.exception());
      break;
    }
  }
  CHECK(after <= 64 * 1024);
  CHECK_THROWS_AS(response.read_chunk().get(), CancelledException);
  CHECK_FALSE(token.has_cancellables());
  CHECK(client.get(server.url("/hello")).get().body == "hello");
}

TEST_CASE("A read's own token cancels that read and closes the connection") {
  test_http::Server server;
  Client client;
  auto response = client.send(Request("GET", server.url("/slow-body"))).get();
  std::size_t received = 0;
  while (received < 1000) received += response.read_chunk().get().value().size();  // All the server sends.
  CancellationToken read_token;
  auto pending = response.read_chunk(read_token);  // The server holds the rest.
  read_token.cancel();
  CHECK(pending.exception() == read_token.exception());
  auto after = response.read_chunk();  // The connection is closed: every read fails the same way.
  CHECK_THROWS_AS(after.get(), CancelledException);
  CHECK(after.exception() == read_token.exception());
}

TEST_CASE("Releasing a StreamedResponse while a read is outstanding fails that read and closes the connection") {
  test_http::Server server;
  Client client;
  cancellable::Future<std::optional<std::string>> pending;
  {
    auto response = client.send(Request("GET", server.url("/slow-body"))).get();
    std::size_t received = 0;
    while (received < 1000) received += response.read_chunk().get().value().size();
    pending = response.read_chunk();  // The server sends nothing more.
  }  // (Under ASan this was a use after free: the connection went while the read was on it.)
  CHECK(error_kind(pending) == Kind::client_closed);
  CHECK_THAT(error_text(pending), Catch::Contains("StreamedResponse was released"));
  CHECK(client.get(server.url("/hello")).get().body == "hello");
  CHECK(client.open_connections() == 1);
}

TEST_CASE("A streamed body read to its end leaves its connection for the next request") {
  test_http::Server server;
  Client client;
  CancellationToken token;
  {
    auto response = client.send(Request("GET", server.url("/bytes/100000")), token).get();
    CHECK(response.read_all().get() == std::string(100000, 'x'));
    CHECK_FALSE(response.read_chunk().get().has_value());
  }
  CHECK_FALSE(token.has_cancellables());
  CHECK(client.get(server.url("/hello")).get().body == "hello");
  CHECK(server.connections() == 1);
}

TEST_CASE("A request body's source stops being read once its request is cancelled") {
  test_http::Server server;
  Client client;
  CancellationToken token;
  // (Shared with the source: a call under way when the request ends
  // returns afterwards, on the source's thread.)
  struct Calls {
    std::mutex mutex;
    std::condition_variable called;
    int calls = 0, calls_after_cancel = 0;
  };
  auto state = std::make_shared<Calls>();
  Request request("POST", server.url("/sink"));
  request.body_source = [state, token]() -> std::optional<std::string> {
    std::lock_guard lock(state->mutex);
    ++state->calls;
    if (token.is_cancelled()) ++state->calls_after_cancel;
    state->called.notify_all();
    return std::string(64 * 1024, 's');
  };
  auto f = client.request(std::move(request), token);
  {
    std::unique_lock lock(state->mutex);
    state->called.wait(lock, [&] { return state->calls >= 4; });
  }
  token.cancel();
  CHECK(f.exception() == token.exception());
  CHECK(client.get(server.url("/hello")).get().body == "hello");  // After the teardown.
  int settled;
  {
    std::lock_guard lock(state->mutex);
    settled = state->calls;
    CHECK(state->calls_after_cancel <= 1);  // At most the one under way when cancel() came.
  }
  CHECK(client.get(server.url("/hello")).get().body == "hello");
  std::lock_guard lock(state->mutex);
  CHECK(state->calls == settled);
}

TEST_CASE("A request body's source is sent chunked, and its failure fails the request") {
  test_http::Server server;
  Client client;
  int n = 0;
  Request request("PUT", server.url("/echo"));
  request.body_source = [&]() -> std::optional<std::string> {
    if (n == 3) return std::nullopt;
    return "part" + std::to_string(n++);
  };
  auto r = client.request(std::move(request)).get();
  CHECK(r.body == "part0part1part2");
  CHECK(r.headers.get("x-seen-transfer-encoding") == "chunked");

  Request failing("PUT", server.url("/echo"));
  failing.body_source = []() -> std::optional<std::string> { throw std::runtime_error("disk gone"); };
  auto f = client.request(std::move(failing));
  CHECK(error_kind(f) == Kind::body_source);
  CHECK_THAT(error_text(f), Catch::Contains("disk gone"));
}

TEST_CASE("One token cancels 50 requests in flight, and the client keeps working") {
  test_http::Server server;
  Client client;
  CancellationToken token;
  std::vector<cancellable::Future<cancellable::http::Response>> futures;
  for (int i = 0; i < 50; ++i) futures.push_back(client.get(server.url("/hold"), token));
  server.wait_for_requests(50);
  token.cancel();
  for (auto& f : futures) {
    REQUIRE(f.is_ready());
    CHECK(f.exception() == token.exception());
  }
  CHECK_FALSE(token.has_cancellables());
  CHECK(client.get(server.url("/hello")).get().body == "hello");
  CHECK(client.open_connections() == 1);
}

TEST_CASE("A cancel from another thread fails the request") {
  test_http::Server server;
  Client client;
  CancellationToken token;
  auto f = client.get(server.url("/hold"), token);
  std::thread canceller([&] {
    server.wait_for_requests(1);
    token.cancel();
  });
  CHECK_THROWS_AS(f.get(), CancelledException);
  canceller.join();
}

TEST_CASE("Cancelling one request leaves a concurrent one and later ones working") {
  test_http::Server server;
  Client client;
  CancellationToken a, b;
  auto streaming = client.send(Request("GET", server.url("/endless")), b).get();
  CHECK(streaming.read_chunk().get().value().size() > 0);
  auto held = client.get(server.url("/hold"), a);
  server.wait_for_requests(2);
  a.cancel();
  CHECK_THROWS_AS(held.get(), CancelledException);
  CHECK(streaming.read_chunk().get().value().size() > 0);  // Still streaming.
  CHECK(client.get(server.url("/hello")).get().body == "hello");
  b.cancel();
  CHECK_THROWS_AS(streaming.read_chunk().get(), CancelledException);
}

TEST_CASE("A TimeoutCancellationToken fails a request with TimeoutException") {
  test_http::Server server;
  Client client;
  cancellable::TimeoutCancellationToken token(50ms);
  auto f = client.get(server.url("/hold"), token);
  CHECK_THROWS_AS(f.get(), cancellable::TimeoutException);
  CHECK_FALSE(token.has_cancellables());
}

TEST_CASE("Nothing stays attached to a token after success or failure") {
  test_http::Server server;
  Client client;
  CancellationToken token;
  client.get(server.url("/hello"), token).get();
  CHECK_FALSE(token.has_cancellables());
  CHECK(error_kind(client.get(server.url("/malformed"), token)) == Kind::protocol);
  CHECK_FALSE(token.has_cancellables());
  CHECK(error_kind(client.get("http://127.0.0.1:" + std::to_string(closed_port()) + "/", token)) ==
        Kind::connect_failed);
  CHECK_FALSE(token.has_cancellables());
}

TEST_CASE("Failures are HttpErrors of their kind") {
  test_http::Server server;
  Client client;
  SECTION("bad URLs fail the future, the call does not throw") {
    for (auto url : {"ftp://127.0.0.1/", "http://", "http://127.0.0.1:99999/", "not a url", "http://a b/",
                     "http://[::1/", "http://user@127.0.0.1/"}) {
      INFO(url);
      CHECK(error_kind(client.get(url)) == Kind::bad_url);
    }
  }
  SECTION("connection refused") {
    auto f = client.get("http://127.0.0.1:" + std::to_string(closed_port()) + "/");
    CHECK(error_kind(f) == Kind::connect_failed);
    CHECK_THAT(error_text(f), Catch::Contains("cannot connect to 127.0.0.1:"));
  }
  SECTION("an unknown host") {
    CHECK(error_kind(client.get("http://no-such-host.invalid/")) == Kind::unknown_host);
  }
  SECTION("a malformed response, and a connection closed without one") {
    auto malformed = client.get(server.url("/malformed"));
    CHECK(error_kind(malformed) == Kind::protocol);
    CHECK_THAT(error_text(malformed), Catch::Contains("the response is not HTTP/1.x"));
    auto closed = client.get(server.url("/close"));
    CHECK(error_kind(closed) == Kind::protocol);
    CHECK_THAT(error_text(closed), Catch::Contains("closed the connection without a response"));
  }
  SECTION("a body over the limit") {
    ClientOptions options;
    options.max_body_bytes = 1000;
    Client small(options);
    CHECK(small.get(server.url("/bytes/1000")).get().body.size() == 1000);
    CHECK(error_kind(small.get(server.url("/bytes/1001"))) == Kind::body_too_large);
  }
  SECTION("a CA file that is not there, at construction") {
    ClientOptions options;
    options.ca_file = "/nonexistent/ca.pem";
    CHECK_THROWS_WITH(Client(options), Catch::Contains("/nonexistent/ca.pem"));
  }
}

TEST_CASE("The idle limit stops a server that never answers, the total deadline one that drips") {
  test_http::Server server;
  ClientOptions idle;
  idle.idle_timeout = 200ms;
  CHECK(error_kind(Client(idle).get(server.url("/hold"))) == Kind::idle_timeout);
  ClientOptions total;
  total.timeout = 300ms;
  total.idle_timeout = 60s;
  CHECK(error_kind(Client(total).get(server.url("/drip"))) == Kind::deadline);
}

namespace {
// A listening socket on 127.0.0.1 that never answers on its own.
struct RawListener {
  explicit RawListener(int backlog) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(fd, backlog) == 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(addr.sin_port);
  }
  ~RawListener() { ::close(fd); }
  std::string url(const char* scheme) const { return std::string(scheme) + "://127.0.0.1:" + std::to_string(port) + "/"; }
  int fd = -1;
  std::uint16_t port = 0;
};
}  // namespace

TEST_CASE("A connect that never completes is stopped by the idle limit") {
  // A backlog of 0 holds one connection; SYNs beyond it are dropped, so the
  // next connect waits for a SYN-ACK that does not come.
  RawListener full(0);
  int filler = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(full.port);
  REQUIRE(::connect(filler, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  ClientOptions options;
  options.idle_timeout = 300ms;
  Client client(options);
  auto f = client.get(full.url("http"));
  CHECK(error_kind(f) == Kind::idle_timeout);
  CancellationToken token;
  auto cancelled = client.get(full.url("http"), token);
  token.cancel();
  CHECK(cancelled.exception() == token.exception());
  ::close(filler);
}

TEST_CASE("Cancelled in the TLS handshake, the future fails at once") {
  RawListener silent(16);
  Client client;
  CancellationToken token;
  auto f = client.get(silent.url("https"), token);
  const int peer = ::accept4(silent.fd, nullptr, nullptr, SOCK_CLOEXEC);
  REQUIRE(peer >= 0);
  char hello[1];
  REQUIRE(::read(peer, hello, 1) == 1);  // The ClientHello is on its way: the handshake has begun.
  REQUIRE_FALSE(f.is_ready());
  token.cancel();
  CHECK(f.exception() == token.exception());
  // The connection is closed (no TLS shutdown that would wait for us): the
  // rest of the ClientHello, then the end of the stream.
  char rest[4096];
  ssize_t n;
  while ((n = ::read(peer, rest, sizeof rest)) > 0) {
  }
  CHECK(n == 0);
  ::close(peer);
}

TEST_CASE("A lookup that never returns delays neither a cancel, nor other requests, nor the destructor") {
  test_http::Server server;
  std::promise<void> release, entered;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<bool> first{true};
  ClientOptions options;
  options.resolver = [released, &entered, &first](const std::string& host) -> std::vector<std::string> {
    if (host == "hung.test") {
      if (first.exchange(false)) entered.set_value();
      released.wait();
    }
    return {"127.0.0.1"};
  };
  {
    Client client(options);
    CancellationToken token;
    auto hung = client.get("http://hung.test:" + std::to_string(server.port()) + "/hello", token);
    entered.get_future().wait();  // The lookup is under way, and blocked.
    auto other = client.get("http://fine.test:" + std::to_string(server.port()) + "/hello");
    CHECK(other.get().body == "hello");
    REQUIRE_FALSE(hung.is_ready());
    token.cancel();
    CHECK(hung.exception() == token.exception());
    auto hung_again = client.get("http://hung.test:" + std::to_string(server.port()) + "/hello");
    // The destructor returns with that lookup still blocked.
  }
  CHECK(lookup_threads() >= 1);  // Still blocked after the destructor returned.
  release.set_value();
  CHECK(no_lookup_threads());  // Released, they end on their own.
}

TEST_CASE("No sockets or threads are left behind") {
  // Other tests' lookups end on their own, and their clients' joined threads
  // leave /proc/self/task soon after.
  REQUIRE(eventually([] { return lookup_threads() == 0 && threads_named("cancellable-io") == 0; }));
  int fds_before = count_entries("/proc/self/fd");
  int threads_before = count_entries("/proc/self/task");
  INFO("threads before: " << thread_names());
  {
    test_http::Server server;
    Client client;
    CancellationToken token;
    std::vector<cancellable::Future<cancellable::http::Response>> futures;
    for (int i = 0; i < 10; ++i) futures.push_back(client.get(server.url("/hold"), token));
    for (int i = 0; i < 10; ++i) futures.push_back(client.get(server.url("/hello")));
    server.wait_for_requests(20);
    token.cancel();
    for (auto& f : futures) f.wait();
    auto streamed = client.send(Request("GET", server.url("/endless"))).get();
    streamed.read_chunk().get();
    CHECK(client.get(server.url("/status/500")).get().status == 500);
  }
  CHECK(count_entries("/proc/self/fd") == fds_before);
  CHECK(eventually([&] { return count_entries("/proc/self/task") == threads_before; }));
  INFO("threads after: " << thread_names());
  CHECK(count_entries("/proc/self/task") == threads_before);
}

TEST_CASE("The destructor fails requests still running with client_closed") {
  test_http::Server server;
  cancellable::Future<cancellable::http::Response> f;
  {
    Client client;
    f = client.get(server.url("/hold"));
    server.wait_for_requests(1);
  }
  CHECK(error_kind(f) == Kind::client_closed);
}

TEST_CASE("A StreamedResponse released on the I/O thread while its client is being destroyed is no use after free") {
  test_http::Server server;
  std::optional<Client> client(std::in_place);
  std::optional<cancellable::http::StreamedResponse> response(
      client->send(Request("GET", server.url("/slow-body"))).get());
  // A continuation holds the I/O thread, so that the destructor's teardown
  // waits behind it; it then drops the response's last reference there.
  std::mutex mutex;
  std::condition_variable changed;
  bool entered = false, go = false;
  auto f = client->get(server.url("/hello")).then([&](const cancellable::http::Response&) {
    std::unique_lock lock(mutex);
    entered = true;
    changed.notify_all();
    changed.wait(lock, [&] { return go; });
    response.reset();  // (Its op was freed while the teardown still listed it.)
  });
  {
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return entered; });
  }
  std::atomic<pid_t> closer_tid{0};
  std::thread closer([&] {
    closer_tid = ::gettid();
    client.reset();
  });
  // The destructor has begun closing once its thread sleeps in the join.
  REQUIRE(eventually([&] { return closer_tid != 0 && thread_state(closer_tid) == 'S'; }));
  {
    std::lock_guard lock(mutex);
    go = true;
  }
  changed.notify_all();
  closer.join();
  CHECK_FALSE(response.has_value());
  CHECK_NOTHROW(f.get());
}

TEST_CASE("HTTPS: a trusted certificate for the host succeeds; untrusted or for another host fails verification") {
  auto good = test_http::make_certificate("IP:127.0.0.1,DNS:localhost");
  test_http::TempFile good_ca(good.cert_pem);
  test_http::Server server(good);
  auto localhost_url = "https://localhost:" + std::to_string(server.port()) + "/hello";

  ClientOptions trusting;
  trusting.ca_file = good_ca.path();
  {
    Client client(trusting);
    CHECK(client.get(server.url("/hello")).get().body == "hello");
    CHECK(client.get(localhost_url).get().body == "hello");  // By name: SNI and host name check.
    CHECK(client.get(server.url("/gzip")).get().body == test_http::compressed_route_text());
    CHECK(server.connections() == 2);  // Kept alive per host.
    CancellationToken token;
    auto held = client.get(server.url("/hold"), token);
    server.wait_for_requests(4);
    token.cancel();
    CHECK(held.exception() == token.exception());
    CHECK(client.get(server.url("/hello")).get().body == "hello");
  }
  {
    Client untrusting;  // The system store only.
    auto f = untrusting.get(server.url("/hello"));
    CHECK(error_kind(f) == Kind::tls);
    CHECK_THAT(error_text(f), Catch::Contains("certificate verification failed") && Catch::Contains("self-signed"));
  }
  auto other = test_http::make_certificate("DNS:other.example");
  test_http::TempFile other_ca(other.cert_pem);
  test_http::Server wrong_host(other);
  ClientOptions trusting_other;
  trusting_other.ca_file = other_ca.path();
  Client client(trusting_other);
  auto by_ip = client.get(wrong_host.url("/hello"));
  CHECK(error_kind(by_ip) == Kind::tls);
  CHECK_THAT(error_text(by_ip), Catch::Contains("IP address mismatch"));
  auto by_name = client.get("https://localhost:" + std::to_string(wrong_host.port()) + "/hello");
  CHECK(error_kind(by_name) == Kind::tls);
  CHECK_THAT(error_text(by_name), Catch::Contains("hostname mismatch"));
}
