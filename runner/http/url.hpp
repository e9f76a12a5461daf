// URLs of the HTTP client: the request's URL, a redirect's Location resolved
// against it (RFC 3986, by Boost.URL), and the proxy's URL.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace cancellable::http::detail {

struct Url {
  bool tls = false;
  std::string host;  // Lower case; without brackets for IPv6; may end in a dot.
  std::uint16_t port = 80;
  std::string target = "/";  // Path and query, percent-encoded as received.
  std::string userinfo;      // "user:password", percent-decoded (proxy URLs only).

  // host[:port], with brackets for IPv6; the port only when not the scheme's.
  std::string authority() const;
  // host:port always (for CONNECT).
  std::string host_port() const;
  std::string str() const;
  // Scheme, host and port: connections are kept per key.
  std::string key() const;
  // The host for TLS (SNI, certificate check): without a trailing dot, as
  // curl does ("a.test." is "a.test" to the certificate). Lookups use the
  // host as given.
  std::string bare_host() const;
};

// An http:// or https:// URL; HttpError(bad_url) otherwise. User information
// is refused (it would be sent to whoever the URL names).
Url parse_url(std::string_view text);

// A proxy URL as curl reads it: "host:port", "http://[user:password@]host[:port]"
// (default port 1080, as curl's); HttpError(bad_url) for anything else.
Url parse_proxy_url(std::string_view text);

// A Location header against the URL that sent it, as RFC 3986 section 5
// says (relative paths, "?query" alone, dot segments, "//host", a URL in the
// query). Bytes a URL may not hold (spaces, non-ASCII) are percent-encoded
// first, as curl does. Throws HttpError(bad_redirect) when the result is not
// an http or https URL we can follow.
Url resolve_location(const Url& base, std::string_view location);

// Same scheme, host and port: credentials may follow a redirect only then.
bool same_origin(const Url& a, const Url& b);

}  // namespace cancellable::http::detail
