#include "runner/http/request_check.hpp"

#include <algorithm>
#include <cctype>
#include <cstring>

namespace cancellable::http::detail {

namespace {


std::string trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return std::string(s);
}

[[noreturn]] void refuse(const std::string& context, const std::string& why) {
  throw HttpError(HttpError::Kind::bad_request, context + ": " + why);
}

std::string shown(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\r') out += "\\r";
    else if (c == '\n') out += "\\n";
    else if (c == '\0') out += "\\0";
    else out += c;
    if (out.size() > 60) return out + "...";
  }
  return out;
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

bool is_token(std::string_view s) noexcept {
  if (s.empty()) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
  }) && std::find(s.begin(), s.end(), '\0') == s.end();
}

void check_request(const Request& request, const std::string& context) {
  if (!is_token(request.method)) refuse(context, "the method '" + shown(request.method) + "' is not an HTTP token");
  int hosts = 0, lengths = 0;
  for (const auto& [name, value] : request.headers.fields()) {
    if (!is_token(name)) refuse(context, "the header name '" + shown(name) + "' is not an HTTP token");
    if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
      refuse(context, "the value of header '" + name + "' holds a CR, LF or NUL: '" + shown(value) + "'");
    if (iequals(name, "host")) {
      if (++hosts > 1) refuse(context, "Host is given twice");
      if (trim(value).empty()) refuse(context, "Host is empty");
    } else if (iequals(name, "content-length")) {
      if (request.body_source)
        refuse(context, "Content-Length with a BodySource (a streamed body is sent chunked)");
      if (++lengths > 1) refuse(context, "Content-Length is given twice");
      if (trim(value) != std::to_string(request.body.size()))
        refuse(context, "Content-Length: " + shown(value) + " does not match the body's " +
                            std::to_string(request.body.size()) + " bytes");
    } else if (iequals(name, "transfer-encoding")) {
      if (!request.body_source)
        refuse(context, "Transfer-Encoding with a string body (it is sent with its Content-Length)");
      if (!iequals(trim(value), "chunked"))
        refuse(context, "Transfer-Encoding: " + shown(value) + " (a BodySource is sent chunked, nothing else)");
    }
  }
}

}  // namespace cancellable::http::detail
