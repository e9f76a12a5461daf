// JSON in isolates: parse a buffer or a file with simdjson in a worker
// process, map the document to your own result type there, and get only that
// result back. A parse that is cancelled, or that takes longer than its
// timeout, dies with its worker at once; in-thread parsing cannot be stopped
// at all.
//
//   struct Summary { std::size_t users; double total; /* serialize(...) */ };
//   auto summary = cancellable::parse_json_file("big.json", [](simdjson::dom::element root) {
//     Summary s{};
//     for (auto user : root.get_array()) { ++s.users; s.total += double(user["balance"]); }
//     return s;
//   }, token);
//
// The mapping runs in the worker and receives the root element; whatever it
// returns travels back as any isolate result does (see isolate.hpp). A
// simdjson_error thrown by the mapping (a missing key, a wrong type) becomes a
// JsonParseError too.
//
// Errors (each one a failed future, never a crash of the caller):
//   JsonParseError                       malformed or truncated JSON, an empty
//                                        document, invalid UTF-8, a document
//                                        deeper than max_depth; carries
//                                        simdjson's error code and message.
//   std::filesystem::filesystem_error    a file that does not exist or cannot
//                                        be read (parse_json_file).
//   and every error of CancellableIsolate::run.
//
// ### IMPORTANT: buffer lifetime
// parse_json reads `json` in the worker. The process backend sees a
// copy-on-write snapshot taken when the call returns, but the thread backend
// reads your buffer while it runs: keep it alive until the future completes.
//
// Files are opened and read inside the worker, never by the caller first.
// Progress (Isolate::progress, IsolateOptions::on_progress) reports the stages
// "parsing" (0 of 2) and "mapping" (1 of 2).
//
// Thread-safety: both functions may be called from any thread (see
// isolate.hpp for what the mapping may do inside a forked worker).
#pragma once

#include <simdjson.h>

#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

#include "cancellable/cancellation_token.hpp"
#include "cancellable/isolate.hpp"
#include "cancellable/json_errors.hpp"

namespace cancellable {

struct JsonOptions {
  // Deeper documents fail with JsonParseError (simdjson::DEPTH_ERROR).
  std::size_t max_depth = simdjson::DEFAULT_MAX_DEPTH;
};

namespace detail {

[[noreturn]] inline void throw_json_error(simdjson::error_code code) {
  throw JsonParseError(static_cast<int>(code), simdjson::error_message(code));
}

// Runs mapping(root), turning simdjson's own exceptions into JsonParseError.
template <class F>
decltype(auto) map_json(F& mapping, simdjson::dom::element root) {
  try {
    return mapping(root);
  } catch (const simdjson::simdjson_error& e) {
    throw_json_error(e.error());
  }
}

}  // namespace detail

// Parses json in an isolate and returns mapping(root) computed there.
template <class F>
auto parse_json(std::string_view json, F mapping,
                const CancellationToken& token = CancellationToken::none(),
                IsolateOptions options = {}, JsonOptions json_options = {}) {
  return CancellableIsolate::run(
      [json, mapping = std::move(mapping), json_options]() mutable {
        simdjson::dom::parser parser;
        if (auto error = parser.allocate(std::max<std::size_t>(json.size(), 64), json_options.max_depth)) {
          detail::throw_json_error(error);
        }
        simdjson::dom::element root;
        report_progress(0, 2, "parsing");
        if (auto error = parser.parse(json.data(), json.size()).get(root)) {
          detail::throw_json_error(error);
        }
        report_progress(1, 2, "mapping");
        return detail::map_json(mapping, root);
      },
      token, std::move(options));
}

// Opens and parses the file at path in an isolate and returns mapping(root).
template <class F>
auto parse_json_file(std::filesystem::path path, F mapping,
                     const CancellationToken& token = CancellationToken::none(),
                     IsolateOptions options = {}, JsonOptions json_options = {}) {
  return CancellableIsolate::run(
      [path = std::move(path), mapping = std::move(mapping), json_options]() mutable {
        std::error_code ec;
        const auto size = std::filesystem::file_size(path, ec);
        if (ec) {
          throw std::filesystem::filesystem_error("cannot read JSON file", path, ec);
        }
        simdjson::dom::parser parser;
        if (auto error = parser.allocate(std::max<std::size_t>(size, 64), json_options.max_depth)) {
          detail::throw_json_error(error);
        }
        simdjson::dom::element root;
        report_progress(0, 2, "parsing");
        if (auto error = parser.load(path.string()).get(root)) detail::throw_json_error(error);
        report_progress(1, 2, "mapping");
        return detail::map_json(mapping, root);
      },
      token, std::move(options));
}

}  // namespace cancellable
