// WorkerPool::map's parent side that needs no template: reading a chunk's
// answer (include/cancellable/detail/pool_map.hpp has the format) and the
// error that names the failing input.
#include <cstring>
#include <stdexcept>
#include <string>

#include "cancellable/detail/pool_map.hpp"
#include "cancellable/pool.hpp"
#include "worker/protocol/result_channel.hpp"

namespace cancellable {

namespace {
std::string describe(const std::exception_ptr& cause) {
  try {
    std::rethrow_exception(cause);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception of unknown type";
  }
}
}  // namespace

MapInputFailed::MapInputFailed(std::size_t index, std::exception_ptr cause)
    : std::runtime_error("WorkerPool::map: input " + std::to_string(index) + " failed: " + describe(cause)),
      index_(index),
      cause_(std::move(cause)) {}

namespace detail {

// The bytes come from a worker: every size and offset is checked before use.
MapChunkAnswer read_map_answer(std::string_view bytes) {
  const auto bad = [] { return std::runtime_error("WorkerPool::map: a worker's answer is not a chunk's"); };
  MapResultTrailer trailer;
  if (bytes.size() < sizeof trailer) throw bad();
  std::memcpy(&trailer, bytes.data() + bytes.size() - sizeof trailer, sizeof trailer);
  if (trailer.magic != kMapMagic || trailer.failed > 1) throw bad();
  std::size_t left = bytes.size() - sizeof trailer;
  if (trailer.error_size > left) throw bad();
  left -= trailer.error_size;
  const char* error = bytes.data() + left;
  if (trailer.done >= left / sizeof(std::uint64_t)) throw bad();
  const std::size_t offsets_bytes = (trailer.done + 1) * sizeof(std::uint64_t);
  left -= offsets_bytes;
  MapChunkAnswer answer;
  answer.results = bytes.data();
  answer.offsets.resize(trailer.done + 1);
  std::memcpy(answer.offsets.data(), bytes.data() + left, offsets_bytes);
  if (answer.offsets.front() != 0 || answer.offsets.back() > left) throw bad();
  for (std::size_t i = 1; i < answer.offsets.size(); ++i)
    if (answer.offsets[i] < answer.offsets[i - 1]) throw bad();
  if (trailer.failed) answer.failure = decode_exception(ResultView{error, trailer.error_size});
  return answer;
}

}  // namespace detail
}  // namespace cancellable
