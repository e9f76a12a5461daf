// The built-in JSON tasks (include/cancellable/json_tasks.hpp): built
// into cancellable-worker with the json component (CANCELLABLE_JSON).
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <system_error>

#include "cancellable/json_tasks.hpp"
#include "cancellable/detail/json_parse.hpp"
#include "cancellable/json.hpp"
#include "cancellable/json_errors.hpp"

namespace cancellable::builtin {
namespace {

JsonSummary summarize(simdjson::dom::element root, std::size_t bytes) {
  JsonSummary s;
  s.bytes = bytes;
  if (root.is_array()) {
    s.top_level_is_array = true;
    s.top_level_elements = simdjson::dom::array(root).size();
  } else if (root.is_object()) {
    s.top_level_is_object = true;
    s.top_level_elements = simdjson::dom::object(root).size();
  } else {
    s.top_level_elements = 1;
  }
  return s;
}

// One parser for the worker's life, reused by every parse (tasks run one at
// a time): its buffers stay allocated and mapped in, as in a long-running
// program. It keeps the capacity of the largest input parsed so far
// (PoolOptions::recycle_above_growth_bytes gives it back).
simdjson::dom::parser& worker_parser() {
  static simdjson::dom::parser parser;
  return parser;
}

// The document at path, parsed by the worker's parser (valid until its next
// parse). Throws filesystem_error if the file cannot be opened,
// JsonParseError if it is not JSON.
simdjson::dom::element load_json_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw std::filesystem::filesystem_error("cannot read JSON file", path,
                                            std::error_code(errno, std::generic_category()));
  }
  ::close(fd);
  simdjson::dom::element root;
  if (const auto error = worker_parser().load(path).get(root)) detail::throw_json_error(error);
  return root;
}

JsonSummary parse_json_file_task(std::string path) {
  const auto root = load_json_file(path);
  return summarize(root, static_cast<std::size_t>(std::filesystem::file_size(path)));
}

JsonCounts count_json_file_task(std::string path) {
  const auto root = load_json_file(path);
  return detail::count_json(root, static_cast<std::size_t>(std::filesystem::file_size(path)));
}

JsonSummary parse_json_buffer_task(std::string json) {
  simdjson::dom::element root;
  if (const auto error = worker_parser().parse(json).get(root)) detail::throw_json_error(error);
  return summarize(root, json.size());
}

}  // namespace

CANCELLABLE_TASK(parse_json_file, parse_json_file_task);
CANCELLABLE_TASK(parse_json_buffer, parse_json_buffer_task);
CANCELLABLE_TASK(count_json_file, count_json_file_task);

}  // namespace cancellable::builtin
