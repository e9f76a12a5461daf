// The command's JSON output: text as a JSON string (quotes, backslashes and
// control characters escaped; other bytes as they are).
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace cancellable::cli {

inline std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", u);
      out += escaped;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

}  // namespace cancellable::cli
