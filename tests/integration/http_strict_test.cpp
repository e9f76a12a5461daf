// The HTTP client against servers that write exact bytes (support/
// raw_http_server): what a correct HTTP/1.1 client must do when a server is
// odd, broken or hostile. Each case failed before the client handled it.
#include "cancellable/http.hpp"

#include <catch2/catch.hpp>

#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cancellable/exceptions.hpp"
#include "support/http_support.hpp"
#include "support/http_test_server.hpp"
#include "support/raw_http_server.hpp"

using namespace std::chrono_literals;
using cancellable::CancellationToken;
using cancellable::http::Client;
using cancellable::http::ClientOptions;
using cancellable::http::Headers;
using cancellable::http::HttpError;
using cancellable::http::Request;
using test_http::RawConnection;
using test_http::RawServer;
using Kind = cancellable::http::HttpError::Kind;
using test_http::error_kind;
using test_http::error_text;
using test_http::eventually;
using test_http::threads_named;

namespace {

std::string ok(const std::string& body, const std::string& extra = "") {
  return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + extra + "\r\n" + body;
}

// Answers every request on a connection with `reply(request)` until the
// client closes.
RawServer::Handler each(std::function<std::string(const std::string&)> reply) {
  return [reply](RawConnection& c) {
    for (;;) {
      auto request = c.read_request();
      if (request.empty() || !c.write(reply(request))) return;
    }
  };
}


long rss_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.starts_with("VmRSS:")) return std::stol(line.substr(6));
  return 0;
}


}  // namespace

// ---- interim responses -----------------------------------------------------

TEST_CASE("Interim 1xx responses are skipped and the final response is returned", "[http][strict]") {
  RawServer server(each([](const std::string&) {
    return "HTTP/1.1 100 Continue\r\n\r\n"
           "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
           "HTTP/1.1 102 Processing\r\n\r\n" +
           ok("final", "X-Final: yes\r\n");
  }));
  Client client;
  auto r = client.post(server.url("/upload"), "data", CancellationToken::none(), {{"Expect", "100-continue"}}).get();
  CHECK(r.status == 200);
  CHECK(r.body == "final");
  CHECK(r.headers.get("X-Final") == "yes");
  CHECK_FALSE(r.headers.contains("Link"));
  auto streamed = client.send(Request("GET", server.url("/s"))).get();
  CHECK(streamed.status == 200);
  CHECK(streamed.read_all().get() == "final");
  CHECK(server.connections() == 1);  // (Kept alive across both, interim responses and all.)
}

TEST_CASE("A 101 that nobody asked for is a protocol error, and so is an endless run of 1xx", "[http][strict]") {
  RawServer switching(each([](const std::string&) { return std::string("HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n"); }));
  Client client;
  CHECK(error_kind(client.get(switching.url("/"))) == Kind::protocol);
  RawServer endless([](RawConnection& c) {
    c.read_request();
    while (c.write("HTTP/1.1 100 Continue\r\n\r\n")) {
    }
  });
  CHECK(error_kind(client.get(endless.url("/"))) == Kind::protocol);
}

// ---- connection reuse ------------------------------------------------------

TEST_CASE("Bytes after a response never reach the next request", "[http][strict]") {
  SECTION("extra bytes in the same write") {
    RawServer server(each([](const std::string& request) {
      if (request.starts_with("GET /first")) return ok("first") + ok("smuggled");
      return ok("second");
    }));
    Client client;
    CHECK(client.get(server.url("/first")).get().body == "first");
    CHECK(client.get(server.url("/second")).get().body == "second");
    CHECK(server.connections() == 2);
  }
  SECTION("extra bytes in a later write") {
    RawServer server([](RawConnection& c) {
      auto request = c.read_request();
      if (request.starts_with("GET /first")) {
        c.write(ok("first"));
        c.write(ok("smuggled"));
        c.hold();
        return;
      }
      c.write(ok("second"));
      c.hold();
    });
    Client client;
    CHECK(client.get(server.url("/first")).get().body == "first");
    // The extra response is on the client's side before the next request
    // (bytes that arrive after a request is sent are its answer to any client).
    server.wait_written(ok("first").size() + ok("smuggled").size());
    CHECK(client.get(server.url("/second")).get().body == "second");
    CHECK(server.connections() == 2);
  }
  SECTION("a body after a HEAD response") {
    RawServer server(each([](const std::string& request) {
      if (request.starts_with("HEAD")) return ok("smuggled");  // (A HEAD response has no body.)
      return ok("real");
    }));
    Client client;
    auto head = client.head(server.url("/")).get();
    CHECK(head.status == 200);
    CHECK(head.body.empty());
    CHECK(client.get(server.url("/")).get().body == "real");
  }
  SECTION("a streamed response released before its end") {
    RawServer server(each([](const std::string& request) {
      if (request.starts_with("GET /big")) return ok(std::string(8 << 20, 'b'));  // (More than one read_chunk().)
      return ok("small");
    }));
    Client client;
    {
      auto r = client.send(Request("GET", server.url("/big"))).get();
      CHECK(r.read_chunk().get().has_value());
    }
    CHECK(client.get(server.url("/small")).get().body == "small");
    CHECK(server.connections() == 2);
  }
}

TEST_CASE("Framing a response two ways is refused, never guessed", "[http][strict]") {
  // RFC 9112 section 6.3: Content-Length beside Transfer-Encoding, or two
  // different Content-Lengths, is how responses are smuggled.
  RawServer server(each([](const std::string& request) {
    if (request.starts_with("GET /both"))
      return std::string("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    if (request.starts_with("GET /two"))
      return std::string("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nhello");
    return ok("clean");
  }));
  Client client;
  CHECK(error_kind(client.get(server.url("/both"))) == Kind::protocol);
  CHECK(error_kind(client.get(server.url("/two"))) == Kind::protocol);
  CHECK(client.get(server.url("/clean")).get().body == "clean");
}

TEST_CASE("An idle connection the server closes is dropped at once, not kept in CLOSE_WAIT", "[http][strict]") {
  RawServer server([](RawConnection& c) {
    c.read_request();
    c.write(ok("bye"));  // Keep-alive by its headers, then closed by the handler's end.
  });
  Client client;
  for (int i = 0; i < 5; ++i) CHECK(client.get(server.url("/")).get().body == "bye");
  CHECK(eventually([&] { return client.open_connections() == 0; }));
  CHECK(server.connections() == 5);
}

TEST_CASE("An idle connection is not kept past max_idle_time", "[http][strict]") {
  test_http::Server server;
  ClientOptions none;
  none.max_idle_time = 0ms;
  Client keeps_none(none);
  CHECK(keeps_none.get(server.url("/hello")).get().body == "hello");
  CHECK(keeps_none.open_connections() == 0);
  ClientOptions brief;
  brief.max_idle_time = 1ms;
  Client keeps_briefly(brief);
  CHECK(keeps_briefly.get(server.url("/hello")).get().body == "hello");
  CHECK(eventually([&] { return keeps_briefly.open_connections() == 0; }));
  CHECK(keeps_briefly.get(server.url("/hello")).get().body == "hello");
}

// ---- requests are checked --------------------------------------------------

TEST_CASE("CR, LF or NUL in a request is refused before any connection, naming the field", "[http][strict]") {
  test_http::Server server;
  Client client;
  auto bad = [&](Request r) {
    auto f = client.request(std::move(r));
    return std::make_pair(error_kind(f), error_text(f));
  };
  auto [k1, t1] = bad(Request("GET", server.url("/hello"), "", {{"X-Test", "a\r\nInjected: yes"}}));
  CHECK(k1 == Kind::bad_request);
  CHECK_THAT(t1, Catch::Contains("X-Test"));
  CHECK(bad(Request("GET", server.url("/hello"), "", {{"X-Test", "a\nb"}})).first == Kind::bad_request);
  CHECK(bad(Request("GET", server.url("/hello"), "", {{"X-Test", std::string("a\0b", 3)}})).first == Kind::bad_request);
  CHECK(bad(Request("GET", server.url("/hello"), "", {{"X Test", "a"}})).first == Kind::bad_request);
  CHECK(bad(Request("GET", server.url("/hello"), "", {{"X-Test:", "a"}})).first == Kind::bad_request);
  CHECK(bad(Request("GET /evil HTTP/1.1\r\nX:", server.url("/hello"))).first == Kind::bad_request);
  CHECK(bad(Request("", server.url("/hello"))).first == Kind::bad_request);
  CHECK(bad(Request("POST", server.url("/echo"), "abc", {{"Content-Length", "10"}})).first == Kind::bad_request);
  CHECK(bad(Request("POST", server.url("/echo"), "abc", {{"Transfer-Encoding", "chunked"}})).first == Kind::bad_request);
  CHECK(bad(Request("GET", server.url("/hello"), "", {{"Host", "a"}, {"host", "b"}})).first == Kind::bad_request);
  Request streamed("POST", server.url("/echo"), "", {{"Content-Length", "3"}});
  streamed.body_source = [] { return std::optional<std::string>(); };
  CHECK(bad(streamed).first == Kind::bad_request);
  CHECK(server.connections() == 0);
  // What agrees with the body is fine.
  CHECK(client.post(server.url("/echo"), "abc", CancellationToken::none(), {{"Content-Length", "3"}}).get().body == "abc");
}

TEST_CASE("A caller's Host replaces the client's own, and is sent once", "[http][strict]") {
  RawServer server(each([](const std::string&) { return ok("x"); }));
  Client client;
  client.get(server.url("/"), CancellationToken::none(), {{"Host", "example.test"}}).get();
  client.get(server.url("/")).get();
  auto requests = server.requests();
  REQUIRE(requests.size() == 2);
  auto count = [](const std::string& s, const std::string& what) {
    std::size_t n = 0;
    for (auto p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
    return n;
  };
  CHECK(count(requests[0], "\r\nHost: ") == 1);
  CHECK(requests[0].find("\r\nHost: example.test\r\n") != std::string::npos);
  CHECK(requests[1].find("\r\nHost: 127.0.0.1:" + std::to_string(server.port()) + "\r\n") != std::string::npos);
}

// ---- bounds ----------------------------------------------------------------

TEST_CASE("Endless chunk extensions, chunk-size lines and trailers fail at once with memory flat", "[http][strict]") {
  auto flood = [](std::string start, char fill) {
    return [start, fill](RawConnection& c) {
      c.read_request();
      c.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + start);
      std::string block(64 * 1024, fill);
      while (c.written() < (std::size_t{160} << 20) && c.write(block)) {
      }
    };
  };
  ClientOptions options;
  options.max_body_bytes = 1 << 20;
  Client client(options);
  struct Case {
    const char* name;
    std::string start;
    char fill;
  };
  for (const auto& kase : {Case{"extension", "1;", 'a'}, Case{"size line", "1", '0'},
                           Case{"trailer", "1\r\nx\r\n0\r\nX-Trailer: ", 't'}}) {
    INFO(kase.name);
    RawServer server(flood(kase.start, kase.fill));
    long before = rss_kib();
    auto f = client.get(server.url("/"));
    CHECK(error_kind(f) == Kind::protocol);
    INFO("grew by " << rss_kib() - before << " KiB");
    CHECK(rss_kib() - before < 8 * 1024);  // (The limit is 256 KiB; the rest is threads and allocator.)
    CHECK(server.written() < (std::size_t{64} << 20));  // (The client stopped reading long before 160 MB.)
  }
}

TEST_CASE("A body over max_body_bytes fails, chunked, compressed or too compressible", "[http][strict]") {
  std::string zeros(std::size_t{32} << 20, '\0');
  std::string bomb = test_http::compress(zeros, 16 + MAX_WBITS);  // ~1000:1
  RawServer server(each([&](const std::string& request) {
    if (request.starts_with("GET /chunked")) {
      std::string r = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
      for (int i = 0; i < 40; ++i) r += "10000\r\n" + std::string(0x10000, 'c') + "\r\n";
      return r + "0\r\n\r\n";
    }
    return ok(bomb, "Content-Encoding: gzip\r\n");
  }));
  ClientOptions small;
  small.max_body_bytes = 1 << 20;
  Client limited(small);
  CHECK(error_kind(limited.get(server.url("/chunked"))) == Kind::body_too_large);
  CHECK(error_kind(limited.get(server.url("/bomb"))) == Kind::body_too_large);
  Client ratio;  // max_decompression_ratio 200 by default
  auto f = ratio.get(server.url("/bomb"));
  CHECK(error_kind(f) == Kind::body_too_large);
  CHECK_THAT(error_text(f), Catch::Contains("max_decompression_ratio"));
  ClientOptions lenient;
  lenient.max_decompression_ratio = 0;
  Client unlimited(lenient);
  CHECK(unlimited.get(server.url("/bomb")).get().body == zeros);
}

// ---- decoding --------------------------------------------------------------

TEST_CASE("gzip, zlib-wrapped deflate and raw deflate are all decoded, as curl does", "[http][strict]") {
  std::string text;
  for (int i = 0; i < 500; ++i) text += "line " + std::to_string(i) + " of a compressible body\n";
  RawServer server(each([&](const std::string& request) {
    if (request.starts_with("GET /gzip")) return ok(test_http::compress(text, 16 + MAX_WBITS), "Content-Encoding: gzip\r\n");
    if (request.starts_with("GET /zlib")) return ok(test_http::compress(text, MAX_WBITS), "Content-Encoding: deflate\r\n");
    if (request.starts_with("GET /raw")) return ok(test_http::compress(text, -MAX_WBITS), "Content-Encoding: deflate\r\n");
    return ok(test_http::compress(text, 16 + MAX_WBITS), "Content-Encoding: GZIP\r\n");
  }));
  Client client;
  CHECK(client.get(server.url("/gzip")).get().body == text);
  CHECK(client.get(server.url("/zlib")).get().body == text);
  CHECK(client.get(server.url("/raw")).get().body == text);
  CHECK(client.get(server.url("/upper")).get().body == text);
  // Streamed, in pieces of any size, the same.
  auto r = client.send(Request("GET", server.url("/raw"))).get();
  CHECK(r.read_all().get() == text);
}

// ---- redirects -------------------------------------------------------------

TEST_CASE("Relative Locations resolve as RFC 3986 says", "[http][strict]") {
  struct Hop {
    std::string location, expected_target;
  };
  for (const auto& hop : {Hop{"../d?u=http://x.test/y", "/a/d?u=http://x.test/y"}, Hop{"?q=2", "/a/b/c?q=2"},
                          Hop{"./e/../f", "/a/b/f"}, Hop{"/g;p?x=1#frag", "/g;p?x=1"}, Hop{"h i", "/a/b/h%20i"},
                          Hop{"../../../../top", "/top"}}) {
    INFO(hop.location);
    RawServer server(each([&](const std::string& request) {
      if (request.starts_with("GET /a/b/c?x=1 "))
        return std::string("HTTP/1.1 302 Found\r\nLocation: " + hop.location + "\r\nContent-Length: 0\r\n\r\n");
      return ok("there");
    }));
    Client client;
    auto r = client.get(server.url("/a/b/c?x=1")).get();
    CHECK(r.body == "there");
    auto requests = server.requests();
    REQUIRE(requests.size() == 2);
    CHECK(requests[1].starts_with("GET " + hop.expected_target + " HTTP/1.1\r\n"));
  }
}

TEST_CASE("Credentials follow a redirect only to the same scheme, host and port", "[http][strict]") {
  RawServer target(each([](const std::string&) { return ok("landed"); }));
  std::string elsewhere = "http://localhost:" + std::to_string(target.port()) + "/landing";
  RawServer origin(each([&](const std::string& request) {
    if (request.starts_with("GET /same"))
      return std::string("HTTP/1.1 302 Found\r\nLocation: /landing\r\nContent-Length: 0\r\n\r\n");
    if (request.starts_with("GET /landing")) return ok("landed");
    return std::string("HTTP/1.1 307 Temporary Redirect\r\nLocation: " + elsewhere + "\r\nContent-Length: 0\r\n\r\n");
  }));
  Client client;
  Headers secrets{{"Authorization", "Bearer s3cret"}, {"Cookie", "session=1"}, {"Proxy-Authorization", "Basic eA=="},
                  {"X-Other", "kept"}};
  CHECK(client.get(origin.url("/same"), CancellationToken::none(), secrets).get().body == "landed");
  auto same = origin.requests().back();
  CHECK(same.find("Authorization: Bearer s3cret") != std::string::npos);
  CHECK(same.find("Cookie: session=1") != std::string::npos);

  CHECK(client.get(origin.url("/other"), CancellationToken::none(), secrets).get().body == "landed");
  auto other = target.requests().back();
  CHECK(other.find("s3cret") == std::string::npos);
  CHECK(other.find("session=1") == std::string::npos);
  CHECK(other.find("Proxy-Authorization") == std::string::npos);
  CHECK(other.find("X-Other: kept") != std::string::npos);
}

TEST_CASE("A redirect to a scheme we do not speak is its own error kind", "[http][strict]") {
  RawServer server(each([](const std::string&) {
    return std::string("HTTP/1.1 302 Found\r\nLocation: ftp://files.test/x\r\nContent-Length: 0\r\n\r\n");
  }));
  Client client;
  auto f = client.get(server.url("/"));
  CHECK(error_kind(f) == Kind::bad_redirect);
  CHECK_THAT(error_text(f), Catch::Contains("ftp"));
}

// ---- durations, body sources, streamed reads ------------------------------

TEST_CASE("Any duration up to max() works for timeout, idle_timeout and max_idle_time", "[http][strict]") {
  test_http::Server server;
  ClientOptions options;
  options.timeout = std::chrono::milliseconds::max();
  options.idle_timeout = std::chrono::milliseconds::max();
  options.max_idle_time = std::chrono::milliseconds::max();
  Client client(options);
  CHECK(client.get(server.url("/hello")).get().body == "hello");
  CHECK(client.get(server.url("/hello")).get().body == "hello");
  auto r = client.send(Request("GET", server.url("/bytes/1000"))).get();
  CHECK(r.read_all().get().size() == 1000);
}

TEST_CASE("A BodySource that returns empty pieces or blocks starves nothing", "[http][strict]") {
  test_http::Server server;
  ClientOptions options;
  options.timeout = 2s;  // (Only the kind of the failure is checked, never when it came.)
  Client client(options);
  // (A source's call in progress when its request ends returns afterwards,
  // on its own thread: the sources share what they use, as http.hpp asks.)
  SECTION("empty pieces forever") {
    auto calls = std::make_shared<std::atomic<long>>(0);
    Request upload("POST", server.url("/echo"));
    upload.body_source = [calls] {
      ++*calls;
      return std::optional<std::string>(std::string());
    };
    auto f = client.request(upload);
    CHECK(eventually([&] { return calls->load() > 1000; }));
    CHECK(client.get(server.url("/hello")).get().body == "hello");  // The I/O thread is free.
    CHECK(error_kind(f) == Kind::deadline);
    // The source is not called after its request ended.
    CHECK(eventually([] { return threads_named("cancellable-body") == 0; }));
  }
  SECTION("a piece that does not come") {
    struct Gate {
      std::mutex m;
      std::condition_variable cv;
      bool go = false, called = false;
    };
    auto gate = std::make_shared<Gate>();
    Request upload("POST", server.url("/echo"));
    upload.body_source = [gate]() -> std::optional<std::string> {
      std::unique_lock lock(gate->m);
      gate->called = true;
      gate->cv.notify_all();
      gate->cv.wait(lock, [&] { return gate->go; });
      return std::nullopt;
    };
    CancellationToken token;
    auto f = client.request(upload, token);
    {
      std::unique_lock lock(gate->m);
      gate->cv.wait(lock, [&] { return gate->called; });
    }
    CHECK(client.get(server.url("/hello")).get().body == "hello");
    token.cancel();
    CHECK(f.is_ready());  // Inside cancel(), though the source is still blocked.
    {
      std::lock_guard lock(gate->m);
      gate->go = true;
    }
    gate->cv.notify_all();
    CHECK(eventually([] { return threads_named("cancellable-body") == 0; }));
  }
}

TEST_CASE("Pending read_chunk() and read_all() fail inside cancel() of the request's token", "[http][strict]") {
  test_http::Server server;
  Client client;
  for (bool whole : {false, true}) {
    INFO(whole);
    CancellationToken token;
    auto r = client.send(Request("GET", server.url("/slow-body")), token).get();
    std::size_t received = 0;
    if (!whole)
      while (received < 1000) received += r.read_chunk().get().value().size();  // All the server sends.
    bool ready;
    if (whole) {
      auto all = r.read_all();
      token.cancel();
      ready = all.is_ready();
      CHECK(all.exception() == token.exception());
    } else {
      auto chunk = r.read_chunk();
      token.cancel();
      ready = chunk.is_ready();
      CHECK(chunk.exception() == token.exception());
    }
    CHECK(ready);
    CHECK_FALSE(token.has_cancellables());
  }
}

TEST_CASE("A second read while one is outstanding throws std::logic_error", "[http][strict]") {
  test_http::Server server;
  Client client;
  auto r = client.send(Request("GET", server.url("/slow-body"))).get();
  std::size_t received = 0;
  while (received < 1000) received += r.read_chunk().get().value().size();
  auto pending = r.read_chunk();
  CHECK_THROWS_AS(r.read_chunk(), std::logic_error);
  CHECK_THROWS_AS(r.read_all(), std::logic_error);
}

TEST_CASE("read_chunk() hands over what has arrived, in large pieces", "[http][strict]") {
  test_http::Server server;
  Client client;
  auto r = client.send(Request("GET", server.url("/bytes/8388608"))).get();
  std::size_t total = 0, pieces = 0;
  while (auto piece = r.read_chunk().get()) {
    total += piece->size();
    ++pieces;
  }
  CHECK(total == 8388608);
  CHECK(pieces <= 8388608 / 16384);  // (At least 16 KiB a piece on average; the 512-byte reads gave 16,384.)
}

// ---- TLS -------------------------------------------------------------------

TEST_CASE("A trailing-dot host is verified and sent in SNI without its dot", "[http][strict]") {
  auto cert = test_http::make_certificate("DNS:localhost");
  test_http::TempFile ca(cert.cert_pem);
  test_http::Server server(cert);
  ClientOptions options;
  options.ca_file = ca.path();
  options.resolver = [](const std::string&) { return std::vector<std::string>{"127.0.0.1"}; };  // (curl --resolve)
  Client client(options);
  auto url = "https://localhost.:" + std::to_string(server.port()) + "/hello";
  CHECK(client.get(url).get().body == "hello");
}

// ---- lookups ---------------------------------------------------------------

TEST_CASE("Lookups run on a bounded number of threads, and identical ones share one call", "[http][strict]") {
  test_http::Server server;
  std::mutex m;
  std::condition_variable cv;
  bool go = false;
  std::map<std::string, int> calls;
  ClientOptions options;
  options.max_lookup_threads = 2;
  options.resolver = [&](const std::string& host) {
    std::unique_lock lock(m);
    ++calls[host];
    cv.notify_all();
    cv.wait(lock, [&] { return go; });
    return std::vector<std::string>{"127.0.0.1"};
  };
  Client client(options);
  std::vector<cancellable::Future<cancellable::http::Response>> futures;
  auto port = std::to_string(server.port());
  for (int i = 0; i < 6; ++i) futures.push_back(client.get("http://host" + std::to_string(i % 3) + ".test:" + port + "/hello"));
  {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return calls.size() == 2; });
  }
  CHECK(threads_named("cancellable-dns") == 2);
  // An IP literal is never looked up; its answer means the I/O thread has
  // started all six lookups (it runs requests in the order they came).
  CHECK(client.get(server.url("/hello")).get().body == "hello");
  {
    std::lock_guard lock(m);
    go = true;
  }
  cv.notify_all();
  for (auto& f : futures) CHECK(f.get().body == "hello");
  std::lock_guard lock(m);
  CHECK(calls.size() == 3);
  for (auto& [host, n] : calls) CHECK(n == 1);  // Six requests, three hosts, three calls.
}
