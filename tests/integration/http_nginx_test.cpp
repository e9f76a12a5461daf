// The HTTP client against nginx (Debian's nginx-light, started here with a
// generated configuration, plain and TLS), with curl as the reference for
// every response it can give one for.
#include "cancellable/http.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "support/daemon.hpp"
#include "support/http_test_server.hpp"

using cancellable::CancellationToken;
using cancellable::http::Client;
using cancellable::http::ClientOptions;
using cancellable::http::Headers;
using cancellable::http::Request;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// nginx in the foreground (one process: it runs as whoever runs the tests),
// serving `www` and passing /upload to `upstream_port`.
class Nginx {
 public:
  Nginx(std::uint16_t upstream_port, const test_http::Certificate& cert) {
    std::mt19937 random(42);
    std::string text;
    for (int i = 0; i < 20000; ++i) text += "line " + std::to_string(random()) + " of a text nginx may compress\n";
    std::string binary(std::size_t{4} << 20, '\0');
    for (auto& c : binary) c = static_cast<char>(random());
    ::mkdir((dir_.path() + "/www").c_str(), 0755);
    ::mkdir((dir_.path() + "/a").c_str(), 0755);
    dir_.file("www/text.txt", text);
    dir_.file("www/binary.bin", binary);
    dir_.file("www/small.txt", "small\n");
    dir_.file("a/who.txt", "server a\n");
    std::string cert_file = dir_.file("cert.pem", cert.cert_pem);
    std::string key_file = dir_.file("key.pem", cert.key_pem);
    for (int attempt = 0;; ++attempt) {
      plain_ = test_http::free_port();
      tls_ = test_http::free_port();
      const std::string d = dir_.path();
      std::string conf =
          "daemon off;\nmaster_process off;\nworker_processes 1;\nerror_log " + d + "/error.log info;\npid " + d +
          "/nginx.pid;\nevents { worker_connections 256; }\nhttp {\n  access_log off;\n"
          "  client_body_temp_path " + d + "/body;\n  proxy_temp_path " + d + "/proxy;\n  fastcgi_temp_path " + d +
          "/fcgi;\n  uwsgi_temp_path " + d + "/uwsgi;\n  scgi_temp_path " + d + "/scgi;\n"
          "  types { text/plain txt; application/octet-stream bin; }\n"
          "  gzip on; gzip_types text/plain; gzip_min_length 0;\n  keepalive_requests 1000;\n"
          "  server {\n    listen 127.0.0.1:" + std::to_string(plain_) + " default_server;\n"
          "    listen 127.0.0.1:" + std::to_string(tls_) + " ssl default_server;\n"
          "    ssl_certificate " + cert_file + ";\n    ssl_certificate_key " + key_file + ";\n"
          "    root " + d + "/www;\n"
          "    location /upload { client_max_body_size 64m; proxy_pass http://127.0.0.1:" + std::to_string(upstream_port) + "/echo; }\n"
          "    location /moved { return 301 /small.txt; }\n"
          "  }\n"
          "  server {\n    listen 127.0.0.1:" + std::to_string(plain_) + ";\n    server_name a.test;\n    root " + d + "/a;\n  }\n"
          "}\n";
      std::string conf_file = dir_.file("nginx.conf", conf);
      try {
        daemon_ = std::make_unique<test_http::Daemon>(
            std::vector<std::string>{test_http::find_program("nginx"), "-c", conf_file, "-p", d}, plain_);
        while (!test_http::accepting(tls_)) std::this_thread::yield();  // (Both listen before the first accepts.)
        return;
      } catch (const std::runtime_error&) {
        if (attempt == 4) throw;
      }
    }
  }
  std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(plain_) + path; }
  std::string tls_url(const std::string& host, const std::string& path) const {
    return "https://" + host + ":" + std::to_string(tls_) + path;
  }
  std::string file(const std::string& name) const { return read_file(dir_.path() + "/www/" + name); }

 private:
  test_http::TempDir dir_;
  std::uint16_t plain_ = 0, tls_ = 0;
  std::unique_ptr<test_http::Daemon> daemon_;
};

struct CurlResult {
  int status = 0;
  std::string body;
};

// What curl makes of a URL: `curl -s --compressed` plus `extra`.
CurlResult curl(const std::string& url, std::vector<std::string> extra = {}) {
  test_http::TempDir dir;
  std::string body = dir.path() + "/body", code = dir.path() + "/code";
  std::vector<std::string> args{test_http::find_program("curl"), "-s", "--compressed", "-o", body, "-w", "%{http_code}"};
  args.insert(args.end(), extra.begin(), extra.end());
  args.push_back(url);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, code.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  pid_t pid;
  int rc = ::posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("cannot start curl");
  ::waitpid(pid, nullptr, 0);
  return CurlResult{std::atoi(read_file(code).c_str()), read_file(body)};
}

}  // namespace

TEST_CASE("Against nginx, every response matches curl's, byte for byte", "[http][nginx]") {
  test_http::Server upstream;
  auto cert = test_http::make_certificate("DNS:localhost,IP:127.0.0.1");
  test_http::TempFile ca(cert.cert_pem);
  Nginx nginx(upstream.port(), cert);
  ClientOptions options;
  options.ca_file = ca.path();
  Client client(options);
  for (std::string path : {"/small.txt", "/text.txt", "/binary.bin", "/missing", "/moved"}) {
    for (bool tls : {false, true}) {
      std::string url = tls ? nginx.tls_url("127.0.0.1", path) : nginx.url(path);
      INFO(url);
      auto reference = curl(url, {"-L", "--cacert", ca.path()});
      auto ours = client.get(url).get();
      CHECK(ours.status == reference.status);
      CHECK(ours.body == reference.body);
    }
  }
  CHECK(client.get(nginx.url("/text.txt")).get().body == nginx.file("text.txt"));  // (gzip on the wire)
  auto streamed = client.send(Request("GET", nginx.tls_url("127.0.0.1", "/binary.bin"))).get();
  CHECK(streamed.read_all().get() == nginx.file("binary.bin"));
}

TEST_CASE("Against nginx, Expect: 100-continue gets the final response and its body", "[http][nginx]") {
  test_http::Server upstream;
  auto cert = test_http::make_certificate("DNS:localhost");
  Nginx nginx(upstream.port(), cert);
  Client client;
  std::string data(200000, 'u');
  auto r = client.post(nginx.url("/upload"), data, CancellationToken::none(), {{"Expect", "100-continue"}}).get();
  CHECK(r.status == 200);
  CHECK(r.body == data);
  test_http::TempFile data_file(data);
  CHECK(curl(nginx.url("/upload"), {"-H", "Expect: 100-continue", "--data-binary", "@" + data_file.path()}).body == data);
  // And a streamed body, chunked.
  Request upload("POST", nginx.url("/upload"), "", {{"Expect", "100-continue"}});
  int pieces = 0;
  upload.body_source = [&pieces]() -> std::optional<std::string> {
    if (pieces == 4) return std::nullopt;
    return std::string(1000, static_cast<char>('a' + pieces++));
  };
  auto streamed = client.request(upload).get();
  CHECK(streamed.status == 200);
  CHECK(streamed.body == std::string(1000, 'a') + std::string(1000, 'b') + std::string(1000, 'c') + std::string(1000, 'd'));
}

TEST_CASE("Against nginx, a caller's Host picks the virtual server, as with curl", "[http][nginx]") {
  test_http::Server upstream;
  Nginx nginx(upstream.port(), test_http::make_certificate("DNS:localhost"));
  Client client;
  auto r = client.get(nginx.url("/who.txt"), CancellationToken::none(), {{"Host", "a.test"}}).get();
  CHECK(r.status == 200);  // (Sent beside our own Host, nginx answered 400.)
  CHECK(r.body == "server a\n");
  CHECK(curl(nginx.url("/who.txt"), {"-H", "Host: a.test"}).body == r.body);
}

TEST_CASE("Against nginx over TLS, a trailing-dot host name is verified without its dot", "[http][nginx]") {
  test_http::Server upstream;
  auto cert = test_http::make_certificate("DNS:localhost");
  test_http::TempFile ca(cert.cert_pem);
  Nginx nginx(upstream.port(), cert);
  ClientOptions options;
  options.ca_file = ca.path();
  // /etc/hosts knows "localhost", not "localhost.": both clients are told.
  options.resolver = [](const std::string&) { return std::vector<std::string>{"127.0.0.1"}; };
  Client client(options);
  CHECK(client.get(nginx.tls_url("localhost.", "/small.txt")).get().body == "small\n");
  CHECK(client.get(nginx.tls_url("localhost", "/small.txt")).get().body == "small\n");
  auto port = nginx.tls_url("", "").substr(8);  // (":PORT")
  CHECK(curl(nginx.tls_url("localhost.", "/small.txt"),
             {"--cacert", ca.path(), "--resolve", "localhost." + port + ":127.0.0.1"}).body == "small\n");
}

TEST_CASE("Against nginx, HEAD then GET on one kept-alive connection, and many requests reuse few connections", "[http][nginx]") {
  test_http::Server upstream;
  Nginx nginx(upstream.port(), test_http::make_certificate("DNS:localhost"));
  Client client;
  auto head = client.head(nginx.url("/binary.bin")).get();
  CHECK(head.status == 200);
  CHECK(head.body.empty());
  CHECK(head.headers.get("Content-Length") == std::to_string(std::size_t{4} << 20));
  CHECK(client.get(nginx.url("/small.txt")).get().body == "small\n");
  std::vector<cancellable::Future<cancellable::http::Response>> many;
  for (int i = 0; i < 40; ++i) many.push_back(client.get(nginx.url(i % 2 ? "/small.txt" : "/text.txt")));
  for (int i = 0; i < 40; ++i) CHECK(many[i].get().body == (i % 2 ? "small\n" : nginx.file("text.txt")));
  CHECK(client.open_connections() <= 8);  // (max_idle_per_host)
}
