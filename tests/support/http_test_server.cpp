#include "support/http_test_server.hpp"

#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

namespace test_http {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;

namespace {

[[noreturn]] void openssl_failed(const char* what) { throw std::runtime_error(std::string("OpenSSL: ") + what); }

std::string bio_string(BIO* bio) {
  char* data = nullptr;
  long size = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<std::size_t>(size));
}

void add_extension(X509* cert, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (!ext || !X509_add_ext(cert, ext, -1)) openssl_failed("X509_add_ext");
  X509_EXTENSION_free(ext);
}


}  // namespace

Certificate make_certificate(const std::string& subject_alt_names) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  if (!key) openssl_failed("EVP_EC_gen");
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), static_cast<long>(std::chrono::steady_clock::now().time_since_epoch().count() & 0x7fffffff));
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 24 * 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("cancellable test"), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  add_extension(cert, NID_basic_constraints, "critical,CA:TRUE");
  add_extension(cert, NID_subject_alt_name, subject_alt_names);
  if (!X509_sign(cert, key, EVP_sha256())) openssl_failed("X509_sign");
  BIO* cert_bio = BIO_new(BIO_s_mem());
  BIO* key_bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(cert_bio, cert);
  PEM_write_bio_PrivateKey(key_bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  Certificate out{bio_string(cert_bio), bio_string(key_bio)};
  BIO_free(cert_bio);
  BIO_free(key_bio);
  X509_free(cert);
  EVP_PKEY_free(key);
  return out;
}


std::string compress(const std::string& text, int window_bits) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    throw std::runtime_error("deflateInit2");
  std::string out(deflateBound(&zs, text.size()), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  zs.avail_in = static_cast<uInt>(text.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

std::string compressed_route_text() {
  std::string text;
  for (int i = 0; i < 200; ++i) text += "cancellable compressed line " + std::to_string(i) + "\n";
  return text;
}

struct Server::Impl {
  std::optional<ssl::context> tls;
  asio::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::uint16_t port = 0;
  std::thread accept_thread;

  mutable std::mutex mutex;
  mutable std::condition_variable changed;
  bool stopping = false;
  std::size_t requests = 0;
  std::size_t connections = 0;
  std::vector<int> fds;  // Connections' sockets, for shutdown.
  std::vector<std::thread> threads;

  explicit Impl(const Certificate* certificate) {
    if (certificate) {
      tls.emplace(ssl::context::tls_server);
      tls->use_certificate_chain(asio::buffer(certificate->cert_pem));
      tls->use_private_key(asio::buffer(certificate->key_pem), ssl::context::pem);
    }
    tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), 0);
    acceptor.open(endpoint.protocol());
    acceptor.set_option(tcp::acceptor::reuse_address(true));
    acceptor.bind(endpoint);
    acceptor.listen(256);
    port = acceptor.local_endpoint().port();
    accept_thread = std::thread([this] { accept_loop(); });
  }

  ~Impl() {
    {
      std::lock_guard lock(mutex);
      stopping = true;
      for (int fd : fds) ::shutdown(fd, SHUT_RDWR);
    }
    changed.notify_all();
    ::shutdown(acceptor.native_handle(), SHUT_RDWR);
    accept_thread.join();
    for (auto& t : threads) t.join();
  }

  // Waits until shutdown, or `d` (forever when zero). True if shutting down.
  bool hold(std::chrono::milliseconds d = std::chrono::milliseconds(0)) {
    std::unique_lock lock(mutex);
    if (d.count() == 0) {
      changed.wait(lock, [&] { return stopping; });
    } else {
      changed.wait_for(lock, d, [&] { return stopping; });
    }
    return stopping;
  }

  void accept_loop() {
    for (;;) {
      boost::system::error_code ec;
      tcp::socket socket(ioc);
      acceptor.accept(socket, ec);
      std::lock_guard lock(mutex);
      if (ec || stopping) return;
      ++connections;
      fds.push_back(socket.native_handle());
      threads.emplace_back([this, s = std::move(socket)]() mutable { serve_connection(std::move(s)); });
    }
  }

  void serve_connection(tcp::socket socket) {
    try {
      if (tls) {
        ssl::stream<tcp::socket&> stream(socket, *tls);
        boost::system::error_code ec;
        stream.handshake(ssl::stream_base::server, ec);
        if (!ec) serve(stream);
      } else {
        serve(socket);
      }
    } catch (const std::exception&) {
      // The client went away, or shutdown: either ends this connection.
    }
    std::lock_guard lock(mutex);
    std::erase(fds, socket.native_handle());
    boost::system::error_code ignored;
    socket.close(ignored);
  }

  // Until the client closes (or shutdown): what a server that never
  // answers does, without keeping its thread once the client is gone.
  template <class Stream>
  void until_closed(Stream& s) {
    char byte[256];
    for (;;) s.read_some(asio::buffer(byte));  // Throws at the end of the stream.
  }

  template <class Stream>
  void send(Stream& s, bhttp::status status, std::string body, bool keep_alive,
            std::vector<std::pair<std::string, std::string>> extra = {}) {
    bhttp::response<bhttp::string_body> res{status, 11};
    res.set(bhttp::field::content_type, "text/plain");
    for (auto& [n, v] : extra) res.set(n, v);
    res.body() = std::move(body);
    res.keep_alive(keep_alive);
    res.prepare_payload();
    bhttp::write(s, res);
  }

  template <class Stream>
  void write_header(Stream& s, bhttp::response<bhttp::empty_body>& res) {
    bhttp::response_serializer<bhttp::empty_body> sr{res};
    bhttp::write_header(s, sr);
  }

  template <class Stream>
  void serve(Stream& s) {
    boost::beast::flat_buffer buffer;
    for (;;) {
      bhttp::request_parser<bhttp::string_body> parser;
      parser.body_limit(64 * 1024 * 1024);
      bhttp::read_header(s, buffer, parser);
      {
        std::lock_guard lock(mutex);
        ++requests;
      }
      changed.notify_all();
      std::string target(parser.get().target());
      if (target == "/sink") {
        hold();
        return;
      }
      bhttp::read(s, buffer, parser);
      auto& req = parser.get();
      bool keep = req.keep_alive();
      if (target == "/hello") {
        send(s, bhttp::status::ok, "hello", keep);
      } else if (target == "/echo") {
        std::vector<std::pair<std::string, std::string>> extra{{"X-Method", std::string(req.method_string())}};
        for (auto name : {"User-Agent", "Accept-Encoding", "Transfer-Encoding", "Content-Type", "X-Test"}) {
          auto f = req.find(name);
          if (f != req.end()) extra.emplace_back(std::string("X-Seen-") + name, std::string(f->value()));
        }
        send(s, bhttp::status::ok, req.body(), keep, extra);
      } else if (target.starts_with("/status/")) {
        int code = std::atoi(target.c_str() + 8);
        send(s, bhttp::int_to_status(static_cast<unsigned>(code)), "status " + std::to_string(code), keep);
      } else if (target.starts_with("/redirect/")) {
        int n = std::atoi(target.c_str() + 10);
        if (n <= 0) {
          send(s, bhttp::status::ok, "arrived", keep);
        } else {
          send(s, bhttp::status::found, "", keep, {{"Location", "/redirect/" + std::to_string(n - 1)}});
        }
      } else if (target == "/redirect-ftp") {
        send(s, bhttp::status::found, "", keep, {{"Location", "ftp://127.0.0.1/file"}});
      } else if (target == "/redirect-loop") {
        send(s, bhttp::status::found, "", keep, {{"Location", "/redirect-loop"}});
      } else if (target == "/hold") {
        until_closed(s);
      } else if (target == "/slow-body") {
        bhttp::response<bhttp::empty_body> res{bhttp::status::ok, 11};
        res.content_length(10'000'000);
        write_header(s, res);
        asio::write(s, asio::buffer(std::string(1000, 'b')));
        until_closed(s);
      } else if (target == "/endless") {
        bhttp::response<bhttp::empty_body> res{bhttp::status::ok, 11};
        res.content_length(std::uint64_t{1} << 50);
        write_header(s, res);
        std::string block(4096, 'e');
        while (!is_stopping()) asio::write(s, asio::buffer(block));  // Throws once the client is gone.
        return;
      } else if (target == "/drip") {
        bhttp::response<bhttp::empty_body> res{bhttp::status::ok, 11};
        res.content_length(1'000'000);
        write_header(s, res);
        while (!hold(std::chrono::milliseconds(50))) asio::write(s, asio::buffer("d", 1));
        return;
      } else if (target == "/gzip" || target == "/deflate") {
        bool gzip = target == "/gzip";
        send(s, bhttp::status::ok, compress(compressed_route_text(), gzip ? 16 + MAX_WBITS : MAX_WBITS), keep,
             {{"Content-Encoding", gzip ? "gzip" : "deflate"}});
      } else if (target.starts_with("/blob/")) {
        // N bytes written from one block (no N-byte string): for large bodies.
        static const std::string block(256 * 1024, 'z');
        std::uint64_t left = std::strtoull(target.c_str() + 6, nullptr, 10);
        bhttp::response<bhttp::empty_body> res{bhttp::status::ok, 11};
        res.content_length(left);
        res.keep_alive(keep);
        write_header(s, res);
        while (left > 0) {
          std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, block.size()));
          asio::write(s, asio::buffer(block.data(), n));
          left -= n;
        }
      } else if (target.starts_with("/bytes/")) {
        send(s, bhttp::status::ok, std::string(std::strtoull(target.c_str() + 7, nullptr, 10), 'x'), keep);
      } else if (target.starts_with("/json/")) {
        long n = std::atol(target.c_str() + 6);
        std::string body = "[";
        for (long i = 0; i < n; ++i)
          body += (i ? "," : "") + std::string("{\"id\":") + std::to_string(i) + ",\"name\":\"user" +
                  std::to_string(i) + "\",\"active\":true}";
        body += "]";
        send(s, bhttp::status::ok, std::move(body), keep, {{"Content-Type", "application/json"}});
      } else if (target == "/malformed") {
        asio::write(s, asio::buffer(std::string("HTTP/1.1 two hundred OK\r\nX: y\r\n\r\n")));
        return;
      } else if (target == "/close") {
        return;
      } else {
        send(s, bhttp::status::not_found, "no such route", keep);
      }
      if (!keep) return;
    }
  }

  bool is_stopping() {
    std::lock_guard lock(mutex);
    return stopping;
  }
};

Server::Server() : impl_(std::make_unique<Impl>(nullptr)) {}
Server::Server(const Certificate& certificate) : impl_(std::make_unique<Impl>(&certificate)) {}
Server::~Server() = default;

std::uint16_t Server::port() const { return impl_->port; }
std::string Server::url(const std::string& path) const {
  return std::string(impl_->tls ? "https" : "http") + "://127.0.0.1:" + std::to_string(impl_->port) + path;
}
std::size_t Server::requests() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->requests;
}
std::size_t Server::connections() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->connections;
}
void Server::wait_for_requests(std::size_t n) const {
  std::unique_lock lock(impl_->mutex);
  impl_->changed.wait(lock, [&] { return impl_->requests >= n; });
}

}  // namespace test_http
