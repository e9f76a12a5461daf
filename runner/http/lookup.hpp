// Host name lookups of one Client: getaddrinfo (or the caller's resolver) on
// at most ClientOptions::max_lookup_threads threads ("cancellable-dns"),
// started on demand and ended when nothing is queued. Concurrent lookups of
// the same host share one call. Nobody waits for a lookup thread: a hung
// getaddrinfo holds one thread, never a request's cancel or the destructor.
#pragma once

#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <boost/asio/ip/address.hpp>

namespace cancellable::http::detail {

class Lookups : public std::enable_shared_from_this<Lookups> {
 public:
  using Resolver = std::function<std::vector<std::string>(const std::string& host)>;

  // One host's answer. Read `addresses` and `error` only once done() is true.
  class Entry {
   public:
    bool done() const {
      std::lock_guard lock(mutex_);
      return done_;
    }
    std::vector<boost::asio::ip::address> addresses;
    std::string error;  // Empty when addresses were found.

   private:
    friend class Lookups;
    mutable std::mutex mutex_;
    bool done_ = false;
    std::string host_;
    std::vector<std::function<void()>> waiters_;
  };

  Lookups(std::size_t max_threads, Resolver resolver) : max_threads_(max_threads), resolver_(std::move(resolver)) {}

  // Starts the lookup of `host`, or joins the one under way. `wake` is called
  // once it is done (on a lookup thread, no lock held; at once if it is done
  // already). Throws HttpError(unknown_host) if no thread could be started
  // to serve it.
  std::shared_ptr<Entry> start(const std::string& host, std::function<void()> wake);

 private:
  void serve();
  void resolve(Entry& entry) const;

  const std::size_t max_threads_;
  const Resolver resolver_;
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<Entry>> pending_;
  std::deque<std::shared_ptr<Entry>> queue_;
  std::size_t threads_ = 0;
};

}  // namespace cancellable::http::detail
