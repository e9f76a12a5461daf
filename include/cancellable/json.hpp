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

#include <fcntl.h>
#include <simdjson.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

#include "cancellable/cancellation_token.hpp"
#include "cancellable/detail/json_arena.hpp"
#include "cancellable/isolate.hpp"
#include "cancellable/json_errors.hpp"

namespace cancellable {

struct JsonOptions {
  // Deeper documents fail with JsonParseError (simdjson::DEPTH_ERROR).
  std::size_t max_depth = simdjson::DEFAULT_MAX_DEPTH;
  // Inputs of 16 MiB or more: the worker keeps its input copy, simdjson's
  // structural indexes and (for a mapping) the tape on transparent huge
  // pages (MADV_HUGEPAGE). Much faster when huge pages are at hand, as in a
  // program that parses again and again; much slower for an occasional
  // parse on a virtual machine that hands free memory back to its host (each
  // huge page is then first faulted in by the host). Off by default; see
  // bench/README.md for both cases measured.
  bool huge_pages = false;
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

// Where a document for `bytes` of JSON puts its tape and strings (as
// simdjson's document::allocate sizes them), from the start of one block.
struct JsonLayout {
  std::size_t capacity = 0;
  std::size_t tape_offset = 0;
  std::size_t strings_offset = 0;
  std::size_t total = 0;

  explicit JsonLayout(std::size_t bytes) {
    capacity = std::max<std::size_t>(bytes, 64);
    const std::size_t tape_entries = SIMDJSON_ROUNDUP_N(capacity + 3, 64);
    const std::size_t string_bytes = SIMDJSON_ROUNDUP_N(5 * capacity / 3 + simdjson::SIMDJSON_PADDING, 64);
    strings_offset = tape_entries * sizeof(std::uint64_t);
    total = strings_offset + string_bytes;
  }
};

// In the worker: a simdjson parser whose buffers (a padded copy of the
// input, the structural indexes and, unless the caller gives a place for
// them, the tape and strings) live in one fresh ScratchMemory rather than in
// simdjson's own allocations: no copy of a file through a padded_string,
// huge pages if asked for, and one mapping to drop when the worker exits.
class ScratchParser {
 public:
  // document: where the tape and strings go (JsonLayout of capacity), or
  // null to keep them in the scratch memory too.
  ScratchParser(std::size_t capacity, const JsonOptions& options, char* document = nullptr)
      : layout_(capacity),
        input_bytes_(SIMDJSON_ROUNDUP_N(layout_.capacity + simdjson::SIMDJSON_PADDING, 64)),
        structural_bytes_(SIMDJSON_ROUNDUP_N(
            (SIMDJSON_ROUNDUP_N(layout_.capacity, 64) + 2 + 7) * sizeof(std::uint32_t), 64)),
        memory_(input_bytes_ + structural_bytes_ + (document ? 0 : layout_.total), options.huge_pages) {
    if (auto error = parser_.allocate(layout_.capacity, options.max_depth)) throw_json_error(error);
    // Let the document record its capacity (so that parse() does not
    // allocate again), then swap simdjson's buffers for ours.
    if (auto error = parser_.doc.allocate(layout_.capacity)) throw_json_error(error);
    char* scratch = memory_.data();
    char* doc = document ? document : scratch + input_bytes_ + structural_bytes_;
    parser_.implementation->structural_indexes.reset(
        reinterpret_cast<std::uint32_t*>(scratch + input_bytes_));
    parser_.doc.tape.reset(reinterpret_cast<std::uint64_t*>(doc + layout_.tape_offset));
    parser_.doc.string_buf.reset(reinterpret_cast<std::uint8_t*>(doc + layout_.strings_offset));
  }
  ~ScratchParser() {
    // The buffers are not simdjson's to free.
    (void)parser_.implementation->structural_indexes.release();
    (void)parser_.doc.tape.release();
    (void)parser_.doc.string_buf.release();
  }
  ScratchParser(const ScratchParser&) = delete;
  ScratchParser& operator=(const ScratchParser&) = delete;

  // Room for capacity() bytes of JSON (and the padding simdjson reads past it).
  char* input() noexcept { return memory_.data(); }
  std::size_t capacity() const noexcept { return layout_.capacity; }

  // Parses the first size bytes of input(); throws JsonParseError.
  simdjson::dom::element parse(std::size_t size) {
    std::memset(input() + size, 0, simdjson::SIMDJSON_PADDING);
    simdjson::dom::element root;
    if (auto error = parser_.parse(input(), size, false).get(root)) throw_json_error(error);
    return root;
  }

 private:
  JsonLayout layout_;
  std::size_t input_bytes_;
  std::size_t structural_bytes_;
  ScratchMemory memory_;
  simdjson::dom::parser parser_;  // destroyed before memory_
};

// In the worker: reads the file at path (expected to hold about `expected`
// bytes, found by a stat) into a new ScratchParser's input, calls
// parsing_starts(), parses it and returns parse(root).
// Throws std::filesystem::filesystem_error if the file cannot be read.
template <class Started, class Parse>
decltype(auto) with_parsed_file(const std::filesystem::path& path, const JsonOptions& options, char* document,
                                std::size_t expected, Started&& parsing_starts, Parse&& parse) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw std::filesystem::filesystem_error("cannot read JSON file", path,
                                            std::error_code(errno, std::generic_category()));
  }
  struct Close {
    int fd;
    ~Close() { ::close(fd); }
  } close_at_end{fd};
  ScratchParser parser(expected, options, document);
  std::size_t size = 0;
  for (;;) {
    // One byte more than the capacity: a file that grew is noticed.
    const std::size_t room = parser.capacity() + 1 - size;
    const ssize_t n = ::read(fd, parser.input() + size, room);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      throw std::filesystem::filesystem_error("cannot read JSON file", path,
                                              std::error_code(errno, std::generic_category()));
    }
    if (n == 0) break;
    size += static_cast<std::size_t>(n);
    if (size > parser.capacity()) throw std::runtime_error("the JSON file grew while it was being parsed");
  }
  parsing_starts();
  return parse(parser.parse(size));
}

}  // namespace detail

// Parses json in an isolate and returns mapping(root) computed there.
template <class F>
auto parse_json(std::string_view json, F mapping,
                const CancellationToken& token = CancellationToken::none(),
                IsolateOptions options = {}, JsonOptions json_options = {}) {
  return CancellableIsolate::run(
      [json, mapping = std::move(mapping), json_options]() mutable {
        detail::ScratchParser parser(json.size(), json_options);
        std::memcpy(parser.input(), json.data(), json.size());
        report_progress(0, 2, "parsing");
        const simdjson::dom::element root = parser.parse(json.size());
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
        return detail::with_parsed_file(path, json_options, nullptr, static_cast<std::size_t>(size),
                                        [] { report_progress(0, 2, "parsing"); },
                                        [&](simdjson::dom::element root) {
                                          report_progress(1, 2, "mapping");
                                          return detail::map_json(mapping, root);
                                        });
      },
      token, std::move(options));
}

}  // namespace cancellable
