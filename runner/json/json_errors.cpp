// JsonParseError, and how it crosses the process boundary of an isolate: the
// JSON component registers its codec here, so the isolate layer knows
// nothing of JSON.
#include "cancellable/json_errors.hpp"

#include <charconv>
#include <exception>
#include <string>
#include <system_error>
#include <typeinfo>

#include "cancellable/isolate_errors.hpp"

namespace cancellable {

namespace {

// "<code>:<simdjson's message>"; the message may arrive cut short.
std::string encode(const std::exception& e) {
  const auto& error = static_cast<const JsonParseError&>(e);
  return std::to_string(error.simdjson_error()) + ":" + error.simdjson_message();
}

// Rebuilds the error from what a worker sent (which may be anything).
std::exception_ptr decode(const std::string& bytes) noexcept {
  try {
    int code = 0;
    const char* begin = bytes.data();
    const char* end = begin + bytes.size();
    const auto [past, error] = std::from_chars(begin, end, code);
    if (error != std::errc{} || past == end || *past != ':') return nullptr;
    return std::make_exception_ptr(JsonParseError(code, std::string(past + 1, end)));
  } catch (...) {
    return std::current_exception();
  }
}

// Registered when the program starts, in every program that links this file
// (any program that can throw a JsonParseError does: the constructor is here).
const bool registered = [] {
  detail::register_isolate_exception(typeid(JsonParseError), {encode, decode});
  return true;
}();

}  // namespace

JsonParseError::JsonParseError(int code, std::string message)
    : std::runtime_error("JsonParseError: " + message + " (simdjson error " + std::to_string(code) + ")"),
      code_(code),
      message_(std::move(message)) {
  (void)registered;
}

}  // namespace cancellable
