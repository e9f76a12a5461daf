// The worker side of JSON in isolates: simdjson's buffers placed in one
// block of memory (a warm shared arena or private scratch memory), the pages
// a parse will touch mapped in ahead of it on a helper thread, input files
// mapped read-only. Declared in cancellable/detail/json_parse.hpp.
#include "cancellable/detail/json_parse.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

#include "cancellable/json.hpp"
#include "cancellable/json_errors.hpp"
#include "worker/json/arena_use.hpp"

namespace cancellable::detail {

void throw_json_error(simdjson::error_code code) {
  throw JsonParseError(static_cast<int>(code), simdjson::error_message(code));
}

JsonLayout::JsonLayout(std::size_t bytes) {
  const auto pages = [](std::size_t n) { return (n + kPage - 1) / kPage * kPage; };
  capacity = std::max<std::size_t>(bytes, 64);
  tape_offset = kPage;
  strings_offset = tape_offset + pages(SIMDJSON_ROUNDUP_N(capacity + 3, 64) * sizeof(std::uint64_t));
  structurals_offset =
      strings_offset + pages(SIMDJSON_ROUNDUP_N(5 * capacity / 3 + simdjson::SIMDJSON_PADDING, 64));
  input_offset = structurals_offset + pages((SIMDJSON_ROUNDUP_N(capacity, 64) + 2 + 7) * sizeof(std::uint32_t));
  total = input_offset + pages(capacity + simdjson::SIMDJSON_PADDING);
}

std::shared_ptr<JsonArena> arena_for(std::size_t bytes) {
  const JsonLayout layout(bytes);
  return acquire_json_arena(layout.capacity, layout.total);
}

namespace {

// Maps in [start, start + bytes) with one call; a no-op where the kernel
// cannot (before Linux 5.14: the pages then fault in one by one).
void prefault(const char* start, std::size_t bytes) noexcept {
  if (bytes > 0) (void)::madvise(const_cast<char*>(start), bytes, MADV_POPULATE_READ);
}

// Bytes from start (page-aligned) that hold pages, at least `known` and at
// most `bytes`: the pages of a region are written from its start on, so a
// binary search with mincore finds where they end.
std::size_t resident_prefix(const char* start, std::size_t known, std::size_t bytes) noexcept {
  constexpr std::size_t kPage = JsonLayout::kPage;
  std::size_t low = known / kPage;  // pages [0, low) hold pages
  std::size_t high = bytes / kPage;
  while (low < high) {
    const std::size_t mid = low + (high - low) / 2;
    unsigned char resident = 0;
    if (::mincore(const_cast<char*>(start) + mid * kPage, kPage, &resident) != 0) break;
    if (resident & 1) {
      low = mid + 1;
    } else {
      high = mid;
    }
  }
  return low * kPage;
}

// In the worker: a simdjson parser whose buffers live in one block laid out
// as JsonLayout says instead of in simdjson's own allocations: either a warm
// shared arena (the caller's, kept between parses, where a JsonDocument's
// tape must be) or fresh private memory.
class ScratchParser {
 public:
  // Parses into arena (which must have room for bytes). The pages that a
  // parse like the last one into this arena touched are mapped in on a
  // helper thread while this one goes on (reading the input, then parsing:
  // the structural indexes are mapped first, as they are written first).
  ScratchParser(JsonArena& arena, std::size_t bytes, const JsonOptions& options)
      : layout_(arena.capacity()), base_(arena.data()), use_(reinterpret_cast<JsonArenaUse*>(arena.data())) {
    if (arena.size() < layout_.total || bytes > layout_.capacity) {
      throw std::logic_error("JSON arena: too small for its capacity or for this input");
    }
    prepare(bytes, options);
    // A fresh arena (no parse recorded) gets a modest share of each region
    // allocated ahead of the parse, as much as a parse of typical JSON
    // surely uses: allocating it here, on the helper thread, takes that
    // work off the parse. A warm one gets a little more than the last parse
    // used, scaled to this input, and only pages that exist already.
    const bool fresh = use_->json_bytes == 0;
    const double scale = fresh ? 0.0 : static_cast<double>(bytes) / static_cast<double>(use_->json_bytes);
    std::size_t total = 0;
    for (const std::size_t r : {JsonArenaUse::kStructurals, JsonArenaUse::kTape, JsonArenaUse::kStrings}) {
      constexpr double kFreshShare[JsonArenaUse::kRegions] = {0.75, 0.2, 0.5, 0.0};  // of the input size
      const double expected = fresh ? kFreshShare[r] * static_cast<double>(bytes)
                                    : static_cast<double>(use_->used[r]) * scale * 1.125 + 65536.0;
      const std::uint64_t limit = fresh ? region_size(r) : std::min<std::uint64_t>(use_->resident[r], region_size(r));
      const std::size_t length = static_cast<std::size_t>(std::min(expected, static_cast<double>(limit)));
      prefaults_[r] = length / JsonLayout::kPage * JsonLayout::kPage;
      total += prefaults_[r];
    }
    const auto map_in = [this] {
      for (const std::size_t r : {JsonArenaUse::kStructurals, JsonArenaUse::kTape, JsonArenaUse::kStrings}) {
        prefault(region(r), prefaults_[r]);
      }
    };
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    // The sanitizers' runtimes do not support new threads in a child forked
    // from a threaded program.
    map_in();
#else
    if (total < (std::size_t{8} << 20)) {
      map_in();  // not worth a thread
      return;
    }
    try {
      helper_ = std::thread(map_in);
    } catch (const std::system_error&) {
      map_in();
    }
#endif
  }

  // Parses into fresh private memory.
  ScratchParser(std::size_t bytes, const JsonOptions& options)
      : layout_(bytes), scratch_(std::in_place, layout_.total), base_(scratch_->data()) {
    prepare(bytes, options);
  }

  ~ScratchParser() {
    if (helper_.joinable()) helper_.join();
    // The buffers are not simdjson's to free.
    (void)parser_.implementation->structural_indexes.release();
    (void)parser_.doc.tape.release();
    (void)parser_.doc.string_buf.release();
  }
  ScratchParser(const ScratchParser&) = delete;
  ScratchParser& operator=(const ScratchParser&) = delete;

  // Room for capacity() bytes of JSON and its padding.
  char* input() noexcept { return region(JsonArenaUse::kInput); }
  std::size_t capacity() const noexcept { return layout_.capacity; }

  // Copies json into input() and maps in its pages first if they exist.
  void copy_in(std::string_view json) {
    if (use_) prefault(input(), std::min<std::size_t>(json.size(), use_->resident[JsonArenaUse::kInput]));
    std::memcpy(input(), json.data(), json.size());
  }

  // Parses size bytes at json, which must be followed by
  // simdjson::SIMDJSON_PADDING readable bytes (input() is); throws
  // JsonParseError.
  simdjson::dom::element parse(const char* json, std::size_t size) {
    if (json == input()) std::memset(input() + size, 0, simdjson::SIMDJSON_PADDING);
    simdjson::dom::element root;
    const auto error = parser_.parse(json, size, false).get(root);
    if (helper_.joinable()) helper_.join();
    if (use_ && !error) record_use(json == input() ? size : 0, size);
    if (error) throw_json_error(error);
    return root;
  }

 private:
  char* region(std::size_t r) const noexcept {
    constexpr std::size_t kTape = JsonArenaUse::kTape, kStrings = JsonArenaUse::kStrings,
                          kStructurals = JsonArenaUse::kStructurals;
    const std::size_t offset = r == kTape       ? layout_.tape_offset
                               : r == kStrings     ? layout_.strings_offset
                               : r == kStructurals ? layout_.structurals_offset
                                                   : layout_.input_offset;
    return base_ + offset;
  }
  std::size_t region_size(std::size_t r) const noexcept {
    const std::size_t end = r + 1 < JsonArenaUse::kRegions ? static_cast<std::size_t>(region(r + 1) - base_)
                                                            : layout_.total;
    return end - static_cast<std::size_t>(region(r) - base_);
  }

  void prepare(std::size_t bytes, const JsonOptions& options) {
    const std::size_t capacity = std::max<std::size_t>(bytes, 64);
    if (auto error = parser_.allocate(capacity, options.max_depth)) throw_json_error(error);
    // Let the document record its capacity (so that parse() does not
    // allocate again), then swap simdjson's buffers for ours.
    if (auto error = parser_.doc.allocate(capacity)) throw_json_error(error);
    parser_.implementation->structural_indexes.reset(
        reinterpret_cast<std::uint32_t*>(region(JsonArenaUse::kStructurals)));
    parser_.doc.tape.reset(reinterpret_cast<std::uint64_t*>(region(JsonArenaUse::kTape)));
    parser_.doc.string_buf.reset(reinterpret_cast<std::uint8_t*>(region(JsonArenaUse::kStrings)));
  }

  void record_use(std::size_t input_bytes, std::size_t json_bytes) noexcept {
    JsonArenaUse& use = *use_;
    use.json_bytes = json_bytes;
    // The root's tape entry holds the tape's length in entries.
    use.used[JsonArenaUse::kTape] =
        (parser_.doc.tape[0] & simdjson::internal::JSON_VALUE_MASK) * sizeof(std::uint64_t);
    use.used[JsonArenaUse::kStructurals] =
        std::uint64_t{parser_.implementation->n_structural_indexes} * sizeof(std::uint32_t);
    use.used[JsonArenaUse::kInput] = input_bytes;
    for (const std::size_t r : {JsonArenaUse::kTape, JsonArenaUse::kStructurals, JsonArenaUse::kInput}) {
      use.resident[r] = std::max(use.resident[r], use.used[r]);
    }
    // simdjson does not say how much of the string buffer it wrote.
    const std::size_t strings = resident_prefix(region(JsonArenaUse::kStrings), use.resident[JsonArenaUse::kStrings],
                                                region_size(JsonArenaUse::kStrings));
    use.used[JsonArenaUse::kStrings] = strings;
    use.resident[JsonArenaUse::kStrings] = strings;
  }

  JsonLayout layout_;
  std::optional<ScratchMemory> scratch_;
  char* base_ = nullptr;
  JsonArenaUse* use_ = nullptr;   // null in private memory
  std::size_t prefaults_[JsonArenaUse::kRegions] = {};
  std::thread helper_;            // mapping pages in, if started
  simdjson::dom::parser parser_;  // destroyed before scratch_
};

// A file mapped read-only for parsing, followed by at least
// simdjson::SIMDJSON_PADDING zero bytes. data() is null if the file cannot
// be mapped.
class MappedJsonFile {
 public:
  MappedJsonFile(int fd, std::size_t size) {
    const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    const auto pages = [page](std::size_t n) { return (n + page - 1) / page * page; };
    length_ = pages(size + simdjson::SIMDJSON_PADDING);
    // Anonymous zero pages for the padding, the file mapped over the start.
    void* region = ::mmap(nullptr, length_, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (region == MAP_FAILED) return;
    if (size > 0 && ::mmap(region, pages(size), PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0) == MAP_FAILED) {
      ::munmap(region, length_);  // not mappable: the caller reads it instead
      return;
    }
    data_ = static_cast<const char*>(region);
    size_ = pages(size);
  }

  // Reads the file in and maps its pages, 64 MiB per call (reading(...),
  // if set, is told after each). False on an I/O error (the caller reads
  // the file instead, and reports the error as a filesystem_error); true,
  // doing nothing, where the kernel cannot (before Linux 5.14: the pages
  // then fault in one by one).
  bool populate(std::size_t file_size, const ReadingProgress& reading) noexcept {
    constexpr std::size_t kChunk = std::size_t{64} << 20;
    for (std::size_t at = 0; at < size_; at += kChunk) {
      const std::size_t length = std::min(kChunk, size_ - at);
      if (::madvise(const_cast<char*>(data_) + at, length, MADV_POPULATE_READ) != 0) return errno == EINVAL;
      if (reading) reading(std::min(at + length, file_size), file_size);
    }
    return true;
  }
  ~MappedJsonFile() {
    if (data_) ::munmap(const_cast<char*>(data_), length_);
  }
  MappedJsonFile(const MappedJsonFile&) = delete;
  MappedJsonFile& operator=(const MappedJsonFile&) = delete;
  const char* data() const noexcept { return data_; }

 private:
  const char* data_ = nullptr;
  std::size_t length_ = 0;
  std::size_t size_ = 0;  // of the file's part, in whole pages
};

[[noreturn]] void throw_read_error(const std::filesystem::path& path, int error) {
  throw std::filesystem::filesystem_error("cannot read JSON file", path,
                                          std::error_code(error, std::generic_category()));
}

// Reads all of fd (a pipe, a /proc file, a file that cannot be mapped).
std::string read_all(int fd, const std::filesystem::path& path, const ReadingProgress& reading = {}) {
  std::string contents;
  std::size_t size = 0;
  for (;;) {
    if (contents.size() - size < 65536) contents.resize(std::max<std::size_t>(2 * contents.size(), 1 << 20));
    const ssize_t n = ::read(fd, contents.data() + size, contents.size() - size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_read_error(path, errno);
    if (n == 0) break;
    size += static_cast<std::size_t>(n);
    if (reading) reading(size, 0);
  }
  contents.resize(size);
  return contents;
}

}  // namespace

struct ParsedJson::State {
  std::optional<MappedJsonFile> mapped;
  std::string contents;
  std::optional<ScratchParser> parser;
};

ParsedJson::ParsedJson(std::unique_ptr<State> state, simdjson::dom::element root, std::size_t size) noexcept
    : state_(std::move(state)), root_(root), size_(size) {}
ParsedJson::ParsedJson(ParsedJson&&) noexcept = default;
ParsedJson& ParsedJson::operator=(ParsedJson&&) noexcept = default;
ParsedJson::~ParsedJson() = default;

ParsedJson parse_json_in_worker(std::string_view json, const JsonOptions& options, JsonArena* arena,
                                const std::function<void()>& parsing_starts) {
  auto state = std::make_unique<ParsedJson::State>();
  if (arena) {
    state->parser.emplace(*arena, json.size(), options);
  } else {
    state->parser.emplace(json.size(), options);
  }
  ScratchParser& parser = *state->parser;
  parser.copy_in(json);
  if (parsing_starts) parsing_starts();
  const simdjson::dom::element root = parser.parse(parser.input(), json.size());
  return ParsedJson(std::move(state), root, json.size());
}

ParsedJson parse_json_file_in_worker(const std::filesystem::path& path, const JsonOptions& options,
                                     JsonArena* arena, bool in_arena,
                                     const std::function<void()>& parsing_starts,
                                     const ReadingProgress& reading) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_read_error(path, errno);
  struct Close {
    int fd;
    ~Close() { ::close(fd); }
  } close_at_end{fd};
  return parse_json_descriptor_in_worker(fd, path, options, arena, in_arena, parsing_starts, reading);
}

ParsedJson parse_json_descriptor_in_worker(int fd, const std::filesystem::path& path, const JsonOptions& options,
                                           JsonArena* arena, bool in_arena,
                                           const std::function<void()>& parsing_starts,
                                           const ReadingProgress& reading) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_read_error(path, errno);
  if (S_ISDIR(st.st_mode)) throw_read_error(path, EISDIR);

  auto state = std::make_unique<ParsedJson::State>();
  auto& mapped = state->mapped;
  auto& contents = state->contents;
  auto& parser = state->parser;
  std::size_t size = 0;
  if (S_ISREG(st.st_mode) && st.st_size > 0) {  // (files in /proc say 0 and are read)
    size = static_cast<std::size_t>(st.st_size);
    mapped.emplace(fd, size);
    if (!mapped->data()) mapped.reset();
  }
  if (!mapped) {
    contents = read_all(fd, path, reading);
    size = contents.size();
  }
  // The parser after the mapping (its helper thread maps pages in, and a
  // new mapping would wait for it), before reading the file in.
  if (arena && size <= arena->capacity()) {
    parser.emplace(*arena, size, options);
  } else if (in_arena) {
    throw std::runtime_error("the JSON file grew while it was being parsed");
  } else {
    parser.emplace(size, options);
  }
  if (mapped && !mapped->populate(size, reading)) {
    mapped.reset();
    contents = read_all(fd, path);  // reports the I/O error
    if (contents.size() > parser->capacity()) {
      throw std::runtime_error("the JSON file grew while it was being parsed");
    }
    size = contents.size();
  }
  const char* json = mapped ? mapped->data() : parser->input();
  if (!mapped) {
    parser->copy_in(contents);
    // The copy is the input now.
    std::string().swap(contents);
  }
  if (parsing_starts) parsing_starts();
  const simdjson::dom::element root = parser->parse(json, size);
  return ParsedJson(std::move(state), root, size);
}

namespace {

void count_into(simdjson::dom::element e, std::uint64_t depth, builtin::JsonCounts& c) {
  c.depth = std::max(c.depth, depth);
  switch (e.type()) {
    case simdjson::dom::element_type::OBJECT:
      ++c.objects;
      for (auto field : e.get_object()) count_into(field.value, depth + 1, c);
      break;
    case simdjson::dom::element_type::ARRAY:
      ++c.arrays;
      for (auto item : e.get_array()) count_into(item, depth + 1, c);
      break;
    case simdjson::dom::element_type::STRING: ++c.strings; break;
    case simdjson::dom::element_type::BOOL: ++c.booleans; break;
    case simdjson::dom::element_type::NULL_VALUE: ++c.nulls; break;
    default: ++c.numbers; break;
  }
}

}  // namespace

builtin::JsonCounts count_json(simdjson::dom::element root, std::uint64_t bytes) {
  builtin::JsonCounts counts;
  counts.bytes = bytes;
  count_into(root, 1, counts);
  return counts;
}

}  // namespace cancellable::detail
