#include "runner/http/lookup.hpp"

#include <netdb.h>
#include <pthread.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <system_error>
#include <thread>

#include "cancellable/http.hpp"

namespace cancellable::http::detail {

std::shared_ptr<Lookups::Entry> Lookups::start(const std::string& host, std::function<void()> wake) {
  std::shared_ptr<Entry> entry;
  {
    std::lock_guard lock(mutex_);
    auto found = pending_.find(host);
    if (found != pending_.end()) {
      entry = found->second;
      std::lock_guard entry_lock(entry->mutex_);
      entry->waiters_.push_back(std::move(wake));
      return entry;
    }
    entry = std::make_shared<Entry>();
    entry->host_ = host;
    entry->waiters_.push_back(std::move(wake));
    pending_[host] = entry;
    queue_.push_back(entry);
    if (threads_ < max_threads_) {
      try {
        std::thread t([self = shared_from_this()] { self->serve(); });
        // Named here, not by the thread: every lookup thread a client has
        // started carries the name as soon as start() returns.
        ::pthread_setname_np(t.native_handle(), "cancellable-dns");
        t.detach();
        ++threads_;
      } catch (const std::system_error& e) {
        if (threads_ == 0) {
          pending_.erase(host);
          queue_.pop_back();
          throw HttpError(HttpError::Kind::unknown_host,
                          "cannot look up '" + host + "': no thread to do it: " + e.what());
        }
        // (A running lookup thread will take it.)
      }
    }
  }
  return entry;
}

void Lookups::serve() {
  for (;;) {
    std::shared_ptr<Entry> entry;
    {
      std::lock_guard lock(mutex_);
      if (queue_.empty()) {
        --threads_;
        return;
      }
      entry = std::move(queue_.front());
      queue_.pop_front();
    }
    resolve(*entry);
    std::vector<std::function<void()>> waiters;
    {
      std::lock_guard lock(mutex_);
      pending_.erase(entry->host_);
      std::lock_guard entry_lock(entry->mutex_);
      entry->done_ = true;
      waiters.swap(entry->waiters_);
    }
    for (auto& w : waiters) w();
  }
}

void Lookups::resolve(Entry& entry) const {
  std::vector<boost::asio::ip::address> addresses;
  std::string error;
  const std::string& host = entry.host_;
  if (resolver_) {
    try {
      for (const auto& text : resolver_(host)) {
        boost::system::error_code ec;
        auto a = boost::asio::ip::make_address(text, ec);
        if (ec) throw std::runtime_error("the resolver gave '" + text + "', not an IP address");
        addresses.push_back(a);
      }
    } catch (const std::exception& e) {
      error = e.what();
    } catch (...) {
      error = "the resolver threw";
    }
  } else {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &found);
    if (rc != 0) {
      error = rc == EAI_SYSTEM ? std::strerror(errno) : ::gai_strerror(rc);
    } else {
      for (addrinfo* a = found; a; a = a->ai_next) {
        if (a->ai_family == AF_INET) {
          auto* sin = reinterpret_cast<sockaddr_in*>(a->ai_addr);
          boost::asio::ip::address_v4::bytes_type b;
          std::memcpy(b.data(), &sin->sin_addr, 4);
          addresses.emplace_back(boost::asio::ip::address_v4(b));
        } else if (a->ai_family == AF_INET6) {
          auto* sin6 = reinterpret_cast<sockaddr_in6*>(a->ai_addr);
          boost::asio::ip::address_v6::bytes_type b;
          std::memcpy(b.data(), &sin6->sin6_addr, 16);
          addresses.emplace_back(boost::asio::ip::address_v6(b, sin6->sin6_scope_id));
        }
      }
      ::freeaddrinfo(found);
    }
  }
  if (addresses.empty() && error.empty()) error = "no address";
  std::lock_guard lock(entry.mutex_);
  entry.addresses = std::move(addresses);
  entry.error = std::move(error);
}

}  // namespace cancellable::http::detail
