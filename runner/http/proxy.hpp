// Which proxy a request goes through: ClientOptions::proxy / no_proxy, or
// by default the environment as curl reads it.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "runner/http/url.hpp"

namespace cancellable::http::detail {

class ProxyConfig {
 public:
  // proxy: nullopt reads the environment (http_proxy for http:// URLs, only
  // in lower case as curl does, since HTTP_PROXY can be set by a CGI
  // request's "Proxy:" header; https_proxy or HTTPS_PROXY for https://;
  // all_proxy or ALL_PROXY for both); "" is no proxy; anything else is the
  // proxy for every request. no_proxy: nullopt reads no_proxy or NO_PROXY.
  // An explicit proxy that does not parse throws std::invalid_argument; one
  // from the environment fails each request that would use it with
  // HttpError(proxy).
  ProxyConfig(const std::optional<std::string>& proxy, const std::optional<std::string>& no_proxy);

  // The proxy for this URL, or nullptr for a direct connection.
  const Url* for_url(const Url& url) const;

 private:
  struct Choice {
    std::optional<Url> url;
    std::string error;  // The variable that did not parse, and why.
  };
  bool bypass(const std::string& host) const;

  Choice http_, https_;
  bool bypass_all_ = false;
  std::vector<std::string> bypass_;  // Host names and addresses, "10.0.0.0/8" ranges.
};

}  // namespace cancellable::http::detail
