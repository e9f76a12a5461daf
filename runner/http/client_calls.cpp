// The parts of the HTTP client's public surface that need no I/O: header
// fields, error kinds' names, and the one-line requests built on request()
// (see include/cancellable/http.hpp; the requests themselves: client.cpp).
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "cancellable/http.hpp"
#include "runner/http/request_check.hpp"

namespace cancellable::http {

using detail::iequals;

Headers::Headers(std::initializer_list<std::pair<std::string, std::string>> fields) : fields_(fields) {}

std::optional<std::string> Headers::get(std::string_view name) const {
  for (const auto& [n, v] : fields_)
    if (iequals(n, name)) return v;
  return std::nullopt;
}
void Headers::add(std::string name, std::string value) { fields_.emplace_back(std::move(name), std::move(value)); }
void Headers::set(std::string name, std::string value) {
  erase(name);
  add(std::move(name), std::move(value));
}
void Headers::erase(std::string_view name) {
  std::erase_if(fields_, [&](const auto& f) { return iequals(f.first, name); });
}

const char* to_string(HttpError::Kind kind) noexcept {
  switch (kind) {
    case HttpError::Kind::bad_url: return "bad_url";
    case HttpError::Kind::unknown_host: return "unknown_host";
    case HttpError::Kind::connect_failed: return "connect_failed";
    case HttpError::Kind::tls: return "tls";
    case HttpError::Kind::protocol: return "protocol";
    case HttpError::Kind::too_many_redirects: return "too_many_redirects";
    case HttpError::Kind::body_too_large: return "body_too_large";
    case HttpError::Kind::deadline: return "deadline";
    case HttpError::Kind::idle_timeout: return "idle_timeout";
    case HttpError::Kind::body_source: return "body_source";
    case HttpError::Kind::client_closed: return "client_closed";
    case HttpError::Kind::bad_request: return "bad_request";
    case HttpError::Kind::bad_redirect: return "bad_redirect";
    case HttpError::Kind::proxy: return "proxy";
  }
  return "unknown";
}


namespace {
Request make_request(std::string method, std::string url, std::string body, Headers headers) {
  Request r;
  r.method = std::move(method);
  r.url = std::move(url);
  r.body = std::move(body);
  r.headers = std::move(headers);
  return r;
}
}  // namespace

Future<Response> Client::head(std::string url, CancellationToken token, Headers headers) {
  return request(make_request("HEAD", std::move(url), {}, std::move(headers)), std::move(token));
}
Future<Response> Client::get(std::string url, CancellationToken token, Headers headers) {
  return request(make_request("GET", std::move(url), {}, std::move(headers)), std::move(token));
}
Future<Response> Client::post(std::string url, std::string body, CancellationToken token, Headers headers) {
  return request(make_request("POST", std::move(url), std::move(body), std::move(headers)), std::move(token));
}
Future<Response> Client::put(std::string url, std::string body, CancellationToken token, Headers headers) {
  return request(make_request("PUT", std::move(url), std::move(body), std::move(headers)), std::move(token));
}
Future<Response> Client::patch(std::string url, std::string body, CancellationToken token, Headers headers) {
  return request(make_request("PATCH", std::move(url), std::move(body), std::move(headers)), std::move(token));
}
Future<Response> Client::del(std::string url, CancellationToken token, Headers headers) {
  return request(make_request("DELETE", std::move(url), {}, std::move(headers)), std::move(token));
}

namespace {
void require_2xx(const Response& r) {
  if (r.status < 200 || r.status >= 300)
    throw HttpStatusError(r.status, "GET " + r.url + ": status " + std::to_string(r.status) + " " + r.reason);
}
}  // namespace

Future<std::string> Client::read(std::string url, CancellationToken token, Headers headers) {
  return get(std::move(url), std::move(token), std::move(headers)).then([](const Response& r) {
    require_2xx(r);
    return r.body;
  });
}

Future<std::vector<std::uint8_t>> Client::read_bytes(std::string url, CancellationToken token, Headers headers) {
  return get(std::move(url), std::move(token), std::move(headers)).then([](const Response& r) {
    require_2xx(r);
    return std::vector<std::uint8_t>(r.body.begin(), r.body.end());
  });
}


}  // namespace cancellable::http
