// A server on 127.0.0.1 that writes exact bytes: for HTTP responses no
// well-behaved server sends (interim responses, bytes after a body, endless
// chunk extensions, ...). Each connection runs the handler on a thread of
// its own; the handler must not use Catch2 (not thread-safe): it talks
// through the Connection, and the test reads what the server recorded.
// The destructor shuts every socket down and joins every thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace test_http {

struct RawServerShared;

class RawConnection {
 public:
  // The next request's head and body (Content-Length or chunked); empty if
  // the client closed first.
  std::string read_request();
  // Writes all of `bytes`; false once the client is gone.
  bool write(std::string_view bytes);
  // Bytes written so far on this connection.
  std::size_t written() const { return written_; }
  // Waits until the client closes (or the server stops).
  void hold();
  // Waits until the test calls RawServer::release() (or the server stops).
  void wait_release();
  int fd() const { return fd_; }

 private:
  friend class RawServer;
  RawConnection(int fd, RawServerShared* shared) : fd_(fd), shared_(shared) {}
  int fd_;
  RawServerShared* shared_;
  std::string buffer_;
  std::size_t written_ = 0;
};

class RawServer {
 public:
  using Handler = std::function<void(RawConnection&)>;
  explicit RawServer(Handler handler);
  ~RawServer();
  RawServer(const RawServer&) = delete;
  RawServer& operator=(const RawServer&) = delete;

  std::uint16_t port() const;
  // "http://127.0.0.1:<port><path>"
  std::string url(const std::string& path) const;
  std::size_t connections() const;
  // Every request read so far, in order (head and body as received).
  std::vector<std::string> requests() const;
  // Blocks until at least n requests were read.
  void wait_for_requests(std::size_t n) const;
  // Bytes written on all connections so far.
  std::size_t written() const;
  // Blocks until at least n bytes were written on all connections. On
  // 127.0.0.1 a write that returned is in the peer's receive queue, so a
  // test can order "the server sent X" before "the client does Y" without
  // assuming how fast the server's thread runs.
  void wait_written(std::size_t n) const;
  // Lets every handler waiting in wait_release() go on.
  void release();

 private:
  std::unique_ptr<RawServerShared> shared_;
};

}  // namespace test_http
