#include "runner/http/proxy.hpp"

#include <cctype>
#include <cstdlib>
#include <stdexcept>

#include <boost/asio/ip/address.hpp>

#include "cancellable/http.hpp"

namespace cancellable::http::detail {

namespace {

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return std::string(v);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// addr in the range "net/bits" (IPv4 or IPv6).
bool in_range(const boost::asio::ip::address& addr, const std::string& range) {
  auto slash = range.find('/');
  boost::system::error_code ec;
  auto net = boost::asio::ip::make_address(range.substr(0, slash), ec);
  if (ec || net.is_v4() != addr.is_v4()) return false;
  unsigned total = addr.is_v4() ? 32 : 128;
  unsigned bits = total;
  if (slash != std::string::npos) {
    char* end = nullptr;
    unsigned long b = std::strtoul(range.c_str() + slash + 1, &end, 10);
    if (*end || b > total) return false;
    bits = static_cast<unsigned>(b);
  }
  auto bytes_of = [](const boost::asio::ip::address& a) {
    if (a.is_v4()) {
      auto b = a.to_v4().to_bytes();
      return std::vector<unsigned char>(b.begin(), b.end());
    }
    auto b = a.to_v6().to_bytes();
    return std::vector<unsigned char>(b.begin(), b.end());
  };
  auto x = bytes_of(addr), y = bytes_of(net);
  for (unsigned i = 0; i < bits; ++i) {
    unsigned mask = 0x80u >> (i % 8);
    if ((x[i / 8] & mask) != (y[i / 8] & mask)) return false;
  }
  return true;
}

}  // namespace

ProxyConfig::ProxyConfig(const std::optional<std::string>& proxy, const std::optional<std::string>& no_proxy) {
  auto choose = [](const std::optional<std::string>& text, const char* from) {
    Choice c;
    if (!text) return c;
    try {
      c.url = parse_proxy_url(*text);
    } catch (const HttpError& e) {
      c.error = std::string(from) + ": " + e.what();
    }
    return c;
  };
  if (proxy) {
    if (!proxy->empty()) {
      http_ = choose(proxy, "ClientOptions::proxy");
      if (!http_.error.empty()) throw std::invalid_argument(http_.error);
      https_ = http_;
    }
  } else {
    auto all = env("all_proxy");
    const char* all_name = "all_proxy";
    if (!all) {
      all = env("ALL_PROXY");
      all_name = "ALL_PROXY";
    }
    if (auto v = env("http_proxy")) {
      http_ = choose(v, "http_proxy");
    } else {
      http_ = choose(all, all_name);
    }
    if (auto v = env("https_proxy")) {
      https_ = choose(v, "https_proxy");
    } else if (auto V = env("HTTPS_PROXY")) {
      https_ = choose(V, "HTTPS_PROXY");
    } else {
      https_ = choose(all, all_name);
    }
  }
  auto list = no_proxy ? no_proxy : env("no_proxy");
  if (!no_proxy && !list) list = env("NO_PROXY");
  if (list) {
    std::string entry;
    auto flush = [&] {
      while (!entry.empty() && entry.front() == '.') entry.erase(0, 1);  // ".example.com" = "example.com" and below.
      while (!entry.empty() && entry.back() == '.') entry.pop_back();
      if (entry.size() > 1 && entry.front() == '[' && entry.back() == ']') entry = entry.substr(1, entry.size() - 2);
      if (entry == "*") bypass_all_ = true;
      else if (!entry.empty()) bypass_.push_back(lower(entry));
      entry.clear();
    };
    for (char c : *list) {
      if (c == ',' || std::isspace(static_cast<unsigned char>(c))) {
        flush();
      } else {
        entry += c;
      }
    }
    flush();
  }
}

bool ProxyConfig::bypass(const std::string& host_in) const {
  if (bypass_all_) return true;
  std::string host = host_in;
  while (!host.empty() && host.back() == '.') host.pop_back();
  boost::system::error_code ec;
  auto addr = boost::asio::ip::make_address(host, ec);
  for (const auto& entry : bypass_) {
    if (!ec) {
      if (in_range(addr, entry)) return true;
      continue;
    }
    if (host == entry) return true;
    if (host.size() > entry.size() && host.ends_with(entry) && host[host.size() - entry.size() - 1] == '.') return true;
  }
  return false;
}

const Url* ProxyConfig::for_url(const Url& url) const {
  const Choice& c = url.tls ? https_ : http_;
  if (!c.url && c.error.empty()) return nullptr;
  if (bypass(url.host)) return nullptr;
  if (!c.error.empty()) throw HttpError(HttpError::Kind::proxy, url.str() + ": the proxy from " + c.error);
  return &*c.url;
}

}  // namespace cancellable::http::detail
