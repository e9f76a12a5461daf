#include "support/raw_http_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace test_http {

struct RawServerShared {
  RawServer::Handler handler;
  int listener = -1;
  std::uint16_t port = 0;
  std::thread accept_thread;
  mutable std::mutex mutex;
  mutable std::condition_variable changed;
  bool stopping = false;
  bool released = false;
  std::size_t connections = 0;
  std::size_t written = 0;
  std::vector<std::string> requests;
  std::vector<int> fds;
  std::vector<std::thread> threads;
};

namespace {

// Reads more into buffer; false at the end of the stream.
bool fill(int fd, std::string& buffer) {
  char chunk[65536];
  ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
  if (n <= 0) return false;
  buffer.append(chunk, static_cast<std::size_t>(n));
  return true;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

std::string RawConnection::read_request() {
  std::size_t end;
  while ((end = buffer_.find("\r\n\r\n")) == std::string::npos)
    if (!fill(fd_, buffer_)) return {};
  std::string head = buffer_.substr(0, end + 4);
  std::string body;
  std::string h = lower(head);
  std::size_t pos = end + 4;
  if (auto cl = h.find("\r\ncontent-length:"); cl != std::string::npos) {
    std::size_t length = std::strtoull(h.c_str() + cl + 17, nullptr, 10);
    while (buffer_.size() < pos + length)
      if (!fill(fd_, buffer_)) return {};
    body = buffer_.substr(pos, length);
    pos += length;
  } else if (h.find("\r\ntransfer-encoding: chunked") != std::string::npos) {
    for (;;) {
      std::size_t line_end;
      while ((line_end = buffer_.find("\r\n", pos)) == std::string::npos)
        if (!fill(fd_, buffer_)) return {};
      std::size_t size = std::strtoull(buffer_.c_str() + pos, nullptr, 16);
      std::size_t data = line_end + 2;
      while (buffer_.size() < data + size + 2)
        if (!fill(fd_, buffer_)) return {};
      body += buffer_.substr(data, size);
      pos = data + size + 2;
      if (size == 0) break;
    }
  }
  std::string request = head + body;
  buffer_.erase(0, pos);
  {
    std::lock_guard lock(shared_->mutex);
    shared_->requests.push_back(request);
  }
  shared_->changed.notify_all();
  return request;
}

bool RawConnection::write(std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
    written_ += static_cast<std::size_t>(n);
    {
      std::lock_guard lock(shared_->mutex);
      shared_->written += static_cast<std::size_t>(n);
    }
    shared_->changed.notify_all();
  }
  return true;
}

void RawConnection::hold() {
  char byte[4096];
  while (::recv(fd_, byte, sizeof byte, 0) > 0) {
  }
}

void RawConnection::wait_release() {
  std::unique_lock lock(shared_->mutex);
  shared_->changed.wait(lock, [&] { return shared_->released || shared_->stopping; });
}

RawServer::RawServer(Handler handler) : shared_(std::make_unique<RawServerShared>()) {
  auto& s = *shared_;
  s.handler = std::move(handler);
  s.listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(s.listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(s.listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(s.listener, 128) != 0)
    throw std::runtime_error("RawServer: bind/listen failed");
  socklen_t len = sizeof addr;
  ::getsockname(s.listener, reinterpret_cast<sockaddr*>(&addr), &len);
  s.port = ntohs(addr.sin_port);
  s.accept_thread = std::thread([&s] {
    for (;;) {
      int fd = ::accept4(s.listener, nullptr, nullptr, SOCK_CLOEXEC);
      std::lock_guard lock(s.mutex);
      if (fd < 0 || s.stopping) {
        if (fd >= 0) ::close(fd);
        return;
      }
      ++s.connections;
      s.fds.push_back(fd);
      s.threads.emplace_back([&s, fd] {
        RawConnection c(fd, &s);
        s.handler(c);
        ::shutdown(fd, SHUT_WR);  // (The client sees the end; the fd closes with the server.)
      });
      s.changed.notify_all();
    }
  });
}

RawServer::~RawServer() {
  auto& s = *shared_;
  {
    std::lock_guard lock(s.mutex);
    s.stopping = true;
    for (int fd : s.fds) ::shutdown(fd, SHUT_RDWR);
  }
  s.changed.notify_all();
  ::shutdown(s.listener, SHUT_RDWR);
  s.accept_thread.join();
  for (auto& t : s.threads) t.join();
  for (int fd : s.fds) ::close(fd);
  ::close(s.listener);
}

std::uint16_t RawServer::port() const { return shared_->port; }
std::string RawServer::url(const std::string& path) const {
  return "http://127.0.0.1:" + std::to_string(shared_->port) + path;
}
std::size_t RawServer::connections() const {
  std::lock_guard lock(shared_->mutex);
  return shared_->connections;
}
std::vector<std::string> RawServer::requests() const {
  std::lock_guard lock(shared_->mutex);
  return shared_->requests;
}
void RawServer::wait_for_requests(std::size_t n) const {
  std::unique_lock lock(shared_->mutex);
  shared_->changed.wait(lock, [&] { return shared_->requests.size() >= n; });
}
std::size_t RawServer::written() const {
  std::lock_guard lock(shared_->mutex);
  return shared_->written;
}
void RawServer::wait_written(std::size_t n) const {
  std::unique_lock lock(shared_->mutex);
  shared_->changed.wait(lock, [&] { return shared_->written >= n || shared_->stopping; });
}
void RawServer::release() {
  {
    std::lock_guard lock(shared_->mutex);
    shared_->released = true;
  }
  shared_->changed.notify_all();
}

}  // namespace test_http
