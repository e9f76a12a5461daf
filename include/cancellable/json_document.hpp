// JsonDocument: a whole simdjson DOM parsed in a worker process and used here
// in place, without a second parse and without a copy.
//
// simdjson's tape and string buffer are position-independent (offsets, not
// pointers), so the worker parses straight into shared memory that this
// process mapped before the fork, and the caller's simdjson::dom::document
// points at the same pages. The memory is a warm arena: up to two idle
// arenas are kept between parses, so later parses write into pages that are
// already resident (a first parse into fresh pages is much slower). Two,
// because a document's arena may go back a few microseconds after the
// document's future is dropped (on the thread that completed it), and a
// parse started at once would otherwise get a cold one. parse_json and
// parse_json_file (json.hpp) use the same arena for their worker's buffers.
// An arena reserves about 15 bytes of address space per input byte (tape 8,
// structural indexes 4, strings 1.7, a copy of the input 1; reserved, not
// used) and keeps in memory the pages that parses touched, as a reused
// simdjson parser keeps its buffers; release_json_arena() gives the idle ones
// back.
//
//   auto parsed = cancellable::parse_json_document_file("big.json", token);
//   const cancellable::JsonDocument& doc = parsed.get();
//   for (auto user : doc.root().get_array()) { ... }
//
// Errors: as parse_json / parse_json_file (json.hpp).
//
// Lifetime: elements obtained from root() are valid while the JsonDocument
// (or the future holding it) lives. A cancelled parse keeps its arena until
// its worker has been reaped, so a dying worker never writes into memory that
// another parse uses. A parse that completes gives its arena back once its
// worker has committed the document (the worker writes nothing after that),
// and the document arrives then, before the worker's exit (see json.hpp).
//
// Thread-safety: a JsonDocument is immutable; root() may be called from any
// thread. Not copyable; movable.
#pragma once

#include <simdjson.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "cancellable/cancellation_token.hpp"
#include "cancellable/detail/json_arena.hpp"
#include "cancellable/detail/json_parse.hpp"
#include "cancellable/isolate.hpp"
#include "cancellable/json.hpp"

namespace cancellable {

class JsonDocument {
 public:
  JsonDocument(std::shared_ptr<detail::JsonArena> arena, std::size_t tape_offset,
               std::size_t strings_offset, std::size_t json_bytes)
      : arena_(std::move(arena)), json_bytes_(json_bytes) {
    doc_.tape.reset(reinterpret_cast<std::uint64_t*>(arena_->data() + tape_offset));
    doc_.string_buf.reset(reinterpret_cast<std::uint8_t*>(arena_->data() + strings_offset));
  }
  JsonDocument(JsonDocument&&) noexcept = default;
  JsonDocument& operator=(JsonDocument&& other) noexcept {
    release_buffers();
    arena_ = std::move(other.arena_);
    doc_ = std::move(other.doc_);
    json_bytes_ = other.json_bytes_;
    return *this;
  }
  ~JsonDocument() { release_buffers(); }

  // The root of the document.
  simdjson::dom::element root() const noexcept { return doc_.root(); }
  // Bytes of JSON that were parsed.
  std::size_t json_bytes() const noexcept { return json_bytes_; }

 private:
  // The buffers belong to the arena, not to the document.
  void release_buffers() noexcept {
    (void)doc_.tape.release();
    (void)doc_.string_buf.release();
  }

  std::shared_ptr<detail::JsonArena> arena_;
  simdjson::dom::document doc_;
  std::size_t json_bytes_ = 0;
};

// Gives the idle arenas' memory back to the system.
inline void release_json_arena() noexcept { detail::release_idle_json_arena(); }

namespace detail {

template <class Source>
Future<JsonDocument> parse_document(std::size_t bytes, Source source, const CancellationToken& token,
                                    IsolateOptions options, JsonOptions json_options) {
  auto arena = arena_for(bytes);
  auto parsed = run_json_work(
      arena,
      [source = std::move(source), json_options](JsonArena* arena) mutable {
        // Everything in the shared arena, where the caller uses the tape and
        // strings in place.
        source(json_options, *arena);
        return std::uint8_t{1};
      },
      token, std::move(options));
  // The document takes the continuation's reference: once the document is
  // gone, the arena is idle again (not held until the continuation itself is
  // destroyed, on whichever thread ran it).
  return parsed.then([arena = std::move(arena), bytes](std::uint8_t) mutable {
    const JsonLayout layout(arena->capacity());
    return JsonDocument(std::move(arena), layout.tape_offset, layout.strings_offset, bytes);
  });
}

}  // namespace detail

// Parses json in an isolate into shared memory; the result is the document.
// See json.hpp for the buffer-lifetime rule of the thread backend.
inline Future<JsonDocument> parse_json_document(std::string_view json,
                                                const CancellationToken& token = CancellationToken::none(),
                                                IsolateOptions options = {}, JsonOptions json_options = {}) {
  return detail::parse_document(
      json.size(),
      [json](const JsonOptions& json_options, detail::JsonArena& arena) {
        (void)detail::parse_json_in_worker(json, json_options, &arena, [] { report_progress(0, 1, "parsing"); });
      },
      token, std::move(options), json_options);
}

// Opens, reads and parses the file in an isolate into shared memory.
inline Future<JsonDocument> parse_json_document_file(std::filesystem::path path,
                                                     const CancellationToken& token = CancellationToken::none(),
                                                     IsolateOptions options = {},
                                                     JsonOptions json_options = {}) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);  // a stat, not a read
  if (ec) {
    return make_failed_future<JsonDocument>(std::make_exception_ptr(
        std::filesystem::filesystem_error("cannot read JSON file", path, ec)));
  }
  return detail::parse_document(
      static_cast<std::size_t>(size),
      [path](const JsonOptions& json_options, detail::JsonArena& arena) {
        (void)detail::parse_json_file_in_worker(path, json_options, &arena, true,
                                                [] { report_progress(0, 1, "parsing"); });
      },
      token, std::move(options), json_options);
}

}  // namespace cancellable
