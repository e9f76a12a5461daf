// JSON pointers (RFC 6901) for `cancellable parse --pointer`, resolved by
// hand so that "not found" (no such key or index, or a step into a number or
// string) is told apart from a malformed pointer.
#pragma once

#include <simdjson.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cancellable::cli {

// The pointer's reference tokens, unescaped; nothing if it is malformed (not
// empty and not starting with '/', or '~' not followed by 0 or 1).
inline std::optional<std::vector<std::string>> json_pointer_tokens(std::string_view pointer) {
  std::vector<std::string> tokens;
  if (pointer.empty()) return tokens;
  if (pointer.front() != '/') return std::nullopt;
  std::size_t i = 1;
  for (;;) {
    const std::size_t end = pointer.find('/', i);
    const std::string_view raw = pointer.substr(i, end == std::string_view::npos ? std::string_view::npos : end - i);
    std::string token;
    for (std::size_t k = 0; k < raw.size(); ++k) {
      if (raw[k] != '~') {
        token += raw[k];
      } else if (k + 1 < raw.size() && (raw[k + 1] == '0' || raw[k + 1] == '1')) {
        token += raw[++k] == '0' ? '~' : '/';
      } else {
        return std::nullopt;
      }
    }
    tokens.push_back(std::move(token));
    if (end == std::string_view::npos) return tokens;
    i = end + 1;
  }
}

// The element at pointer under root, if there is one. A malformed pointer
// resolves to nothing (check it first with json_pointer_tokens).
inline bool resolve_json_pointer(simdjson::dom::element root, std::string_view pointer, simdjson::dom::element& out) {
  const auto tokens = json_pointer_tokens(pointer);
  if (!tokens) return false;
  simdjson::dom::element at = root;
  for (const std::string& token : *tokens) {
    if (at.is_object()) {
      if (at.get_object().value_unsafe().at_key(token).get(at)) return false;
    } else if (at.is_array()) {
      // An index: digits, no leading zero ("-", past the end, is nothing).
      if (token.empty() || token.size() > 18 || (token.size() > 1 && token[0] == '0') ||
          token.find_first_not_of("0123456789") != std::string::npos) {
        return false;
      }
      if (at.get_array().value_unsafe().at(std::stoull(token)).get(at)) return false;
    } else {
      return false;  // a step into a number, string, boolean or null
    }
  }
  out = at;
  return true;
}

}  // namespace cancellable::cli
