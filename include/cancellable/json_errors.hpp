// JsonParseError: JSON that simdjson rejected, with simdjson's error code and
// message. Kept free of simdjson's header so that it can cross the process
// boundary of an isolate like any other library exception.
//
// Thread-safety: immutable; safe to read from any thread.
#pragma once

#include <stdexcept>
#include <string>

namespace cancellable {

class JsonParseError : public std::runtime_error {
 public:
  // code: a simdjson::error_code value; message: simdjson::error_message(code).
  JsonParseError(int code, std::string message);
  // The simdjson::error_code (cast it: static_cast<simdjson::error_code>(...)).
  int simdjson_error() const noexcept { return code_; }
  // simdjson's own text for the error.
  const std::string& simdjson_message() const noexcept { return message_; }

 private:
  int code_;
  std::string message_;
};

}  // namespace cancellable
