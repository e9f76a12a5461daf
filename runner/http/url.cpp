#include "runner/http/url.hpp"

#include <algorithm>
#include <cctype>

#include <boost/asio/ip/address.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>

#include "cancellable/http.hpp"

namespace cancellable::http::detail {

namespace urls = boost::urls;

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

[[noreturn]] void bad(HttpError::Kind kind, std::string_view url, const std::string& why) {
  const char* what = kind == HttpError::Kind::bad_redirect ? "cannot follow the redirect to '" : "bad URL '";
  throw HttpError(kind, what + std::string(url) + "': " + why);
}

bool is_host_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
}

// Scheme, host and port of a parsed absolute URL (the target is the caller's).
Url from_view(const urls::url_view_base& u, std::string_view text, HttpError::Kind kind, bool allow_userinfo) {
  Url url;
  std::string scheme = lower(u.scheme());
  if (scheme == "https") {
    url.tls = true;
    url.port = 443;
  } else if (scheme != "http") {
    bad(kind, text, "scheme '" + scheme + "' is not http or https");
  }
  if (!u.has_authority()) bad(kind, text, "no host");
  if (u.has_userinfo()) {
    if (!allow_userinfo) bad(kind, text, "user information is not supported");
    url.userinfo = u.userinfo();
  }
  switch (u.host_type()) {
    case urls::host_type::ipv4:
    case urls::host_type::ipv6:
      url.host = u.host_address();  // (Without brackets.)
      break;
    case urls::host_type::name: {
      url.host = lower(u.host());
      for (char c : url.host)
        if (!is_host_char(c)) bad(kind, text, "host '" + url.host + "' has a character not allowed in a host name");
      break;
    }
    default:
      bad(kind, text, "the host is not a name or an IP address");
  }
  if (url.host.empty() || url.host == ".") bad(kind, text, "no host");
  if (u.has_port()) {
    if (u.port().empty()) {
      // "http://host:/" is the default port (RFC 3986 section 6.2.3).
    } else if (u.port().size() > 5 || std::stoul(std::string(u.port())) == 0 ||
               std::stoul(std::string(u.port())) > 65535) {
      bad(kind, text, "port '" + std::string(u.port()) + "' is not a number from 1 to 65535");
    } else {
      url.port = static_cast<std::uint16_t>(std::stoul(std::string(u.port())));
    }
  }
  return url;
}

void set_target(Url& url, const urls::url_view_base& u, std::string_view text, HttpError::Kind kind) {
  std::string path(u.encoded_path());
  url.target = path.empty() ? "/" : path;
  if (url.target.front() != '/') bad(kind, text, "the path is not absolute");
  if (u.has_query()) url.target += "?" + std::string(u.encoded_query());
}

// Percent-encodes what a URL may not hold, as curl does with a Location.
std::string encode_loose(std::string_view text) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (char ch : text) {
    auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c >= 0x7f) {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += ch;
    }
  }
  return out;
}

}  // namespace

std::string Url::authority() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  if (port != (tls ? 443 : 80)) h += ":" + std::to_string(port);
  return h;
}
std::string Url::host_port() const {
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
}
std::string Url::str() const { return (tls ? "https://" : "http://") + authority() + target; }
std::string Url::key() const { return (tls ? "https://" : "http://") + host + ":" + std::to_string(port); }
std::string Url::bare_host() const {
  return host.size() > 1 && host.back() == '.' ? host.substr(0, host.size() - 1) : host;
}

Url parse_url(std::string_view text) {
  for (char c : text)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) bad(HttpError::Kind::bad_url, text, "it has a space or a control character");
  auto parsed = urls::parse_uri(text);
  if (!parsed) {
    if (text.find("://") == std::string_view::npos) bad(HttpError::Kind::bad_url, text, "no scheme (expected http:// or https://)");
    bad(HttpError::Kind::bad_url, text, "not a URL (" + parsed.error().message() + ")");
  }
  Url url = from_view(*parsed, text, HttpError::Kind::bad_url, false);
  set_target(url, *parsed, text, HttpError::Kind::bad_url);
  return url;
}

Url parse_proxy_url(std::string_view text) {
  std::string full(text);
  if (full.find("://") == std::string::npos) full = "http://" + full;
  auto parsed = urls::parse_uri(full);
  if (!parsed) bad(HttpError::Kind::bad_url, text, "not a proxy URL (" + parsed.error().message() + ")");
  if (lower(parsed->scheme()) != "http")
    bad(HttpError::Kind::bad_url, text, "proxy scheme '" + std::string(parsed->scheme()) + "' is not supported (only http://)");
  Url url = from_view(*parsed, text, HttpError::Kind::bad_url, true);
  if (!parsed->has_port() || parsed->port().empty()) url.port = 1080;  // curl's default proxy port.
  return url;
}

Url resolve_location(const Url& base, std::string_view location) {
  std::string encoded = encode_loose(location);
  auto ref = urls::parse_uri_reference(encoded);
  if (!ref) bad(HttpError::Kind::bad_redirect, location, "not a URL (" + ref.error().message() + ")");
  const std::string base_text = base.str();  // (The view below points into it.)
  auto base_url = urls::parse_uri(base_text);
  if (!base_url) bad(HttpError::Kind::bad_redirect, location, "the base URL does not parse");
  urls::url resolved;
  auto rc = urls::resolve(*base_url, *ref, resolved);
  if (!rc) bad(HttpError::Kind::bad_redirect, location, "it does not resolve (" + rc.error().message() + ")");
  Url url = from_view(resolved, location, HttpError::Kind::bad_redirect, false);
  set_target(url, resolved, location, HttpError::Kind::bad_redirect);
  // Boost.URL 1.81 keeps the ".." that climb above the root ("/../../top");
  // RFC 3986 section 5.2.4 drops them ("/top"), as curl does.
  while (url.target.starts_with("/../") || url.target == "/.." || url.target.starts_with("/..?"))
    url.target.erase(0, 3);
  if (url.target.empty() || url.target.front() != '/') url.target.insert(0, "/");
  return url;
}

bool same_origin(const Url& a, const Url& b) { return a.tls == b.tls && a.host == b.host && a.port == b.port; }

}  // namespace cancellable::http::detail
