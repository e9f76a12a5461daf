// Internal: the parse that parse_json, parse_json_file and the JsonDocument
// functions run inside their isolate. Only declarations: the work (simdjson's
// buffers placed in a shared arena, pages mapped in ahead of the parse on a
// helper thread, files mapped read-only) is compiled once, in
// worker/json/json_parse.cpp, so that a user of json.hpp compiles no POSIX
// memory management. A header because json.hpp's templates call it.
#pragma once

#include "cancellable/json_tasks.hpp"

#include <simdjson.h>

#include <cstddef>
#include <filesystem>
#include <functional>
#include <memory>
#include <string_view>

#include "cancellable/detail/json_arena.hpp"

namespace cancellable {
struct JsonOptions;
}

namespace cancellable::detail {

// Throws JsonParseError for code.
[[noreturn]] void throw_json_error(simdjson::error_code code);

// Where a parse of up to `bytes` of JSON puts its buffers in one block of
// memory: a first page recording how the block was used, then simdjson's
// tape and strings (sized as document::allocate sizes them), its structural
// indexes (as parser::allocate sizes them) and room for a copy of the input
// with its padding. Every region starts on a 4 KiB boundary.
struct JsonLayout {
  static constexpr std::size_t kPage = 4096;
  std::size_t capacity = 0;
  std::size_t tape_offset = 0;
  std::size_t strings_offset = 0;
  std::size_t structurals_offset = 0;
  std::size_t input_offset = 0;
  std::size_t total = 0;

  explicit JsonLayout(std::size_t bytes);
};

// The warm arena a worker parses `bytes` of JSON into.
std::shared_ptr<JsonArena> arena_for(std::size_t bytes);

// A parsed document in the worker, with everything its elements point into
// (the parser's buffers, the mapped or copied input): root() is valid while
// this object lives. Movable, not copyable.
class ParsedJson {
 public:
  struct State;
  ParsedJson(std::unique_ptr<State> state, simdjson::dom::element root, std::size_t size) noexcept;
  ParsedJson(ParsedJson&&) noexcept;
  ParsedJson& operator=(ParsedJson&&) noexcept;
  ~ParsedJson();

  simdjson::dom::element root() const noexcept { return root_; }
  // Bytes of JSON parsed (for a pipe: the bytes read).
  std::size_t size() const noexcept { return size_; }

 private:
  std::unique_ptr<State> state_;
  simdjson::dom::element root_;
  std::size_t size_ = 0;
};

// In the worker: copies json into arena (which must have room for it) or,
// if arena is null, into fresh private memory; calls parsing_starts() (if
// set) and parses. Throws JsonParseError.
ParsedJson parse_json_in_worker(std::string_view json, const JsonOptions& options, JsonArena* arena,
                                const std::function<void()>& parsing_starts);

// Called while the input is read in: the bytes read (or mapped in) so far,
// and the input's size (0 when it is not known: a pipe).
using ReadingProgress = std::function<void(std::uint64_t read, std::uint64_t total)>;

// In the worker: opens the file at path, maps it (or reads it, if it cannot
// be mapped: a pipe, a /proc file), calls reading(...) (if set) as it comes
// in, then parsing_starts() (if set) and parses it. The parser's buffers are in arena if it is given and has room;
// otherwise in fresh private memory, unless in_arena, when a file too large
// for the arena fails with std::runtime_error (it grew since the caller
// sized the arena). Throws std::filesystem::filesystem_error if the file
// cannot be read, JsonParseError. A mapped file that shrinks during the
// parse kills the worker with SIGBUS (WorkerCrashed).
ParsedJson parse_json_file_in_worker(const std::filesystem::path& path, const JsonOptions& options,
                                     JsonArena* arena, bool in_arena,
                                     const std::function<void()>& parsing_starts,
                                     const ReadingProgress& reading = {});

// As parse_json_file_in_worker, from a descriptor that is open already
// (standard input: a pipe must be read where it is, not opened again through
// /dev/stdin, which waits for a writer that may be gone). path names it in
// errors. The descriptor is not closed.
ParsedJson parse_json_descriptor_in_worker(int fd, const std::filesystem::path& path, const JsonOptions& options,
                                           JsonArena* arena, bool in_arena,
                                           const std::function<void()>& parsing_starts,
                                           const ReadingProgress& reading = {});

// Counts every value of the document at root by type, and its depth.
builtin::JsonCounts count_json(simdjson::dom::element root, std::uint64_t bytes);

}  // namespace cancellable::detail
