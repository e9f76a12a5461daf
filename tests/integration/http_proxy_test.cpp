// The HTTP client through a real proxy (Debian's tinyproxy, started here on
// 127.0.0.1), and through small hostile ones; the environment read as curl
// reads it.
#include "cancellable/http.hpp"

#include <catch2/catch.hpp>

#include <stdlib.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "support/daemon.hpp"
#include "support/http_support.hpp"
#include "support/http_test_server.hpp"
#include "support/raw_http_server.hpp"

using cancellable::CancellationToken;
using cancellable::http::Client;
using cancellable::http::ClientOptions;
using cancellable::http::HttpError;
using cancellable::http::Request;
using test_http::RawConnection;
using test_http::RawServer;
using Kind = cancellable::http::HttpError::Kind;
using test_http::error_kind;
using test_http::error_text;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// tinyproxy in the foreground on a free port, logging every request.
class Tinyproxy {
 public:
  Tinyproxy() {
    for (int attempt = 0;; ++attempt) {
      std::uint16_t port = test_http::free_port();
      log_ = dir_.path() + "/tinyproxy.log";
      std::string conf = dir_.file("tinyproxy.conf", "Port " + std::to_string(port) +
                                                         "\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 60\n"
                                                         "MaxClients 100\nLogLevel Info\nLogFile \"" +
                                                         log_ + "\"\n");
      try {
        daemon_ = std::make_unique<test_http::Daemon>(
            std::vector<std::string>{test_http::find_program("tinyproxy"), "-d", "-c", conf}, port);
        return;
      } catch (const std::runtime_error&) {
        if (attempt == 4) throw;  // (The port was taken in between; another.)
      }
    }
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(daemon_->port()); }
  std::string log() const { return read_file(log_); }

 private:
  test_http::TempDir dir_;
  std::string log_;
  std::unique_ptr<test_http::Daemon> daemon_;
};

std::string ok(const std::string& body) {
  return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

// Sets (or clears) an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = ::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

}  // namespace

// (First: it changes the environment while no thread of a client exists.)
TEST_CASE("The proxy comes from the environment as curl reads it, and no_proxy bypasses it", "[http][proxy]") {
  RawServer target([](RawConnection& c) {
    for (auto r = c.read_request(); !r.empty(); r = c.read_request())
      if (!c.write(ok(r.find("Via: ") != std::string::npos ? "via proxy" : "direct"))) return;
  });
  Tinyproxy proxy;
  ScopedEnv no1("no_proxy", nullptr), no2("NO_PROXY", nullptr), all1("all_proxy", nullptr), all2("ALL_PROXY", nullptr);
  {
    ScopedEnv env("http_proxy", proxy.url().c_str());
    Client client;
    CHECK(client.get(target.url("/")).get().body == "via proxy");
  }
  {
    ScopedEnv env("HTTP_PROXY", proxy.url().c_str());  // Upper case is not read for http:// (as curl: httpoxy).
    Client client;
    CHECK(client.get(target.url("/")).get().body == "direct");
  }
  {
    ScopedEnv env("http_proxy", proxy.url().c_str());
    for (const char* list : {"127.0.0.1", "localhost, 127.0.0.0/8", "*", ".example.test,127.0.0.1"}) {
      INFO(list);
      ScopedEnv no("no_proxy", list);
      Client client;
      CHECK(client.get(target.url("/")).get().body == "direct");
    }
    ScopedEnv no("no_proxy", "example.test,10.0.0.0/8");
    Client client;
    CHECK(client.get(target.url("/")).get().body == "via proxy");
  }
  {
    ScopedEnv env("http_proxy", "http://[not a proxy");
    Client client;
    CHECK(error_kind(client.get(target.url("/"))) == Kind::proxy);
  }
}

TEST_CASE("http:// goes through tinyproxy as an absolute request", "[http][proxy]") {
  Tinyproxy proxy;
  test_http::Server server;
  ClientOptions options;
  options.proxy = proxy.url();
  Client client(options);
  for (int i = 0; i < 3; ++i) CHECK(client.get(server.url("/hello")).get().body == "hello");
  CHECK(client.post(server.url("/echo"), "through").get().body == "through");
  auto r = client.get(server.url("/gzip")).get();
  CHECK(r.body == test_http::compressed_route_text());
  CHECK(proxy.log().find("GET http://127.0.0.1:" + std::to_string(server.port()) + "/hello") != std::string::npos);
}

TEST_CASE("https:// goes through tinyproxy with CONNECT, and the certificate is still checked", "[http][proxy]") {
  Tinyproxy proxy;
  auto cert = test_http::make_certificate("IP:127.0.0.1");
  test_http::TempFile ca(cert.cert_pem);
  test_http::Server server(cert);
  ClientOptions options;
  options.proxy = proxy.url();
  options.ca_file = ca.path();
  Client client(options);
  CHECK(client.get(server.url("/hello")).get().body == "hello");
  CHECK(client.get(server.url("/bytes/300000")).get().body.size() == 300000);
  CHECK(proxy.log().find("CONNECT 127.0.0.1:" + std::to_string(server.port())) != std::string::npos);
  ClientOptions untrusting;
  untrusting.proxy = proxy.url();
  Client strict(untrusting);
  CHECK(error_kind(strict.get(server.url("/hello"))) == Kind::tls);
}

TEST_CASE("A proxy that refuses, cannot be reached or answers CONNECT with an error is HttpError(proxy)", "[http][proxy]") {
  auto cert = test_http::make_certificate("IP:127.0.0.1");
  test_http::Server secure(cert);
  test_http::Server plain;
  ClientOptions options;
  options.proxy = "http://127.0.0.1:" + std::to_string(test_http::free_port());
  Client unreachable(options);
  CHECK(error_kind(unreachable.get(plain.url("/hello"))) == Kind::proxy);
  CHECK(error_kind(unreachable.get(secure.url("/hello"))) == Kind::proxy);

  RawServer refusing([](RawConnection& c) {
    c.read_request();
    c.write("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
  });
  options.proxy = refusing.url("");
  Client refused(options);
  CHECK(error_kind(refused.get(secure.url("/hello"))) == Kind::proxy);

  Tinyproxy proxy;
  options.proxy = proxy.url();
  Client nowhere(options);
  auto closed = "https://127.0.0.1:" + std::to_string(test_http::free_port()) + "/";
  CHECK(error_kind(nowhere.get(closed)) == Kind::proxy);  // tinyproxy cannot connect: it answers CONNECT with an error.

  ClientOptions bad;
  bad.proxy = "socks5://127.0.0.1:1080";
  CHECK_THROWS_AS(Client(bad), std::invalid_argument);
}

TEST_CASE("Proxy credentials go to the proxy as Proxy-Authorization, never to the server", "[http][proxy]") {
  RawServer fake_proxy([](RawConnection& c) {
    for (auto r = c.read_request(); !r.empty(); r = c.read_request())
      if (!c.write(ok("from the proxy"))) return;
  });
  ClientOptions options;
  options.proxy = "http://user:p%40ss@127.0.0.1:" + std::to_string(fake_proxy.port());
  Client client(options);
  CHECK(client.get("http://origin.test/x").get().body == "from the proxy");
  auto request = fake_proxy.requests().at(0);
  CHECK(request.starts_with("GET http://origin.test/x HTTP/1.1\r\n"));
  CHECK(request.find("Proxy-Authorization: Basic dXNlcjpwQHNz\r\n") != std::string::npos);  // user:p@ss
}

TEST_CASE("A cancel stops a request waiting on the proxy at once", "[http][proxy]") {
  RawServer silent([](RawConnection& c) {
    c.read_request();
    c.hold();
  });
  ClientOptions options;
  options.proxy = silent.url("");
  Client client(options);
  CancellationToken token;
  auto f = client.get("https://origin.test/", token);
  silent.wait_for_requests(1);  // The CONNECT arrived; no answer comes.
  token.cancel();
  CHECK(f.is_ready());
  CHECK(f.exception() == token.exception());
}
