// A small HTTP/1.1 server on 127.0.0.1 for the HTTP client's tests and
// benchmarks (plain, or TLS with a certificate made at run time). One thread
// accepts, one thread serves each connection (blocking Beast); the
// destructor shuts every socket down and joins every thread.
//
// Routes (GET unless said):
//   /hello                 200 "hello", kept alive
//   /echo                  200, body = the request's body; X-Method, X-Seen-*
//                          headers tell what the request carried
//   /status/N              status N, body "status N"
//   /redirect/N            302 to /redirect/N-1; /redirect/0 is 200 "arrived"
//   /redirect-loop         302 to itself
//   /redirect-ftp          302 to ftp://127.0.0.1/file
//   /hold                  reads the request, never answers (until the client closes)
//   /slow-body             headers (Content-Length 10 MB), 1,000 bytes, then nothing
//   /endless               headers, then body bytes as fast as the client takes them
//   /drip                  headers (Content-Length 1,000,000), then a byte every 50 ms
//   /gzip, /deflate        a known text, compressed (Content-Encoding)
//   /blob/N                N bytes of 'z', kept alive, written from one 256 KiB block
//   /bytes/N               N bytes of 'x'
//   /json/N                a JSON array of N small objects
//   /sink                  reads the request's headers, never its body; holds
//   /malformed             a status line that is not HTTP, then closes
//   /close                 closes without answering
#pragma once

#include "temp_file.hpp"  // (beside this header)

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace test_http {

struct Certificate {
  std::string cert_pem;
  std::string key_pem;
};
// A self-signed certificate (its own CA) for the subjectAltName given, as in
// "IP:127.0.0.1,DNS:localhost".
Certificate make_certificate(const std::string& subject_alt_names);

// A file that is removed with the object (tests/support/temp_file.hpp).
using test_support::TempFile;

// `text` compressed by zlib: window_bits 16+15 gzip, 15 zlib-wrapped
// deflate, -15 raw deflate.
std::string compress(const std::string& text, int window_bits);

// The text /gzip and /deflate send, before compression.
std::string compressed_route_text();

class Server {
 public:
  Server();                                       // Plain HTTP.
  explicit Server(const Certificate& certificate);  // HTTPS.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  std::uint16_t port() const;
  // "http://127.0.0.1:<port><path>" (https for a TLS server).
  std::string url(const std::string& path) const;
  // Requests whose headers were read, connections accepted so far.
  std::size_t requests() const;
  std::size_t connections() const;
  // Blocks until at least n requests' headers were read.
  void wait_for_requests(std::size_t n) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace test_http
