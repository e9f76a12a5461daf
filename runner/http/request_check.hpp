// A request is checked before any connection is opened: what the caller
// gives is never sent in a form a server would read as something else.
#pragma once

#include <string>
#include <string_view>

#include "cancellable/http.hpp"

namespace cancellable::http::detail {

// Throws HttpError(bad_request), naming the field, when:
//  - the method is not an RFC 9110 token;
//  - a header name is not a token, or a value holds CR, LF or NUL (header
//    injection);
//  - Content-Length or Transfer-Encoding disagree with the body: a string
//    body goes with its own Content-Length (a caller's must equal it), a
//    BodySource is sent chunked (no Content-Length; a Transfer-Encoding other
//    than "chunked" is refused);
//  - Host is given twice or empty.
void check_request(const Request& request, const std::string& context);

// ASCII case-insensitive equality (header names, methods).
bool iequals(std::string_view a, std::string_view b) noexcept;

// RFC 9110 section 5.6.2.
bool is_token(std::string_view s) noexcept;

}  // namespace cancellable::http::detail
