// The result channel of a process isolate.
//
// Worker side (ChildChannelImpl): the result is encoded in place, first into
// the inline area of the control block, then, if it outgrows it, into a named
// Boost.Interprocess shared memory object (mode 0600, name chosen by the
// parent) that grows by truncate-and-remap, never by copying what was written.
// Past max_result_bytes nothing more is written, only counted, so that
// ResultTooLarge can give both sizes.
//
// Parent side (ResultReader): after the worker has exited (or committed its
// outcome), maps the payload read-only where it is and removes its name at
// once; on destruction unmaps it.
#pragma once

#include <cstddef>
#include <exception>
#include <memory>
#include <optional>
#include <ostream>
#include <streambuf>
#include <string>

#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>

#include "cancellable/detail/isolate_runtime.hpp"
#include "worker/protocol/control_block.hpp"

namespace cancellable::detail {

// A name for a result object: "cancellable.<pid>.<counter>.<random>".
std::string make_result_shm_name();
// Removes result objects left by processes that no longer exist (a parent
// that crashed before it could remove them). Only objects of this user.
void sweep_stale_result_shm() noexcept;
// Removes the named object, ignoring "not found".
void remove_result_shm(const char* name) noexcept;

struct ChildLimits {
  std::size_t max_result_bytes = 0;
  std::optional<std::size_t> memory_limit_bytes;
};

class ChildChannelImpl final : public ChildChannel, private std::streambuf {
 public:
  ChildChannelImpl(ControlBlock* block, ChildLimits limits);
  ~ChildChannelImpl() override;

  std::ostream& result_stream() override { return stream_; }
  void commit_result() override;
  void commit_current_exception() noexcept override;

 private:
  int_type overflow(int_type ch) override;
  std::streamsize xsputn(const char* s, std::streamsize n) override;

  void reset();
  void reserve(std::size_t needed);
  void publish(Outcome outcome);
  void write_exception(const std::exception_ptr& error);

  ControlBlock* block_;
  ChildLimits limits_;
  char* base_;
  std::size_t capacity_;
  std::size_t size_ = 0;   // bytes written
  std::size_t total_ = 0;  // bytes produced, written or not
  bool over_limit_ = false;
  std::unique_ptr<boost::interprocess::shared_memory_object> shm_;
  std::unique_ptr<boost::interprocess::mapped_region> region_;
  std::ostream stream_;
};

// Reads the payload a worker left, after it exited.
class ResultReader {
 public:
  // shm_name: the parent's own copy of the result object's name;
  // max_result_bytes: the run's limit (a larger reported size is refused).
  ResultReader(const ControlBlock* block, const std::string& shm_name, std::size_t max_result_bytes);
  ~ResultReader();
  ResultReader(const ResultReader&) = delete;
  ResultReader& operator=(const ResultReader&) = delete;

  Outcome outcome() const noexcept { return outcome_; }
  ResultView view() const noexcept { return view_; }

 private:
  Outcome outcome_;
  ResultView view_;
  std::unique_ptr<boost::interprocess::mapped_region> region_;
};

// The bytes commit_current_exception writes for error: its kind, type and
// what(), cut to fit max_bytes (never below 552 bytes). memory_limit_bytes:
// the run's memory limit, which turns std::bad_alloc into
// MemoryLimitExceeded.
std::string encode_exception(const std::exception_ptr& error, std::optional<std::size_t> memory_limit_bytes,
                             std::size_t max_bytes);

// Rebuilds the exception a worker encoded with commit_current_exception.
std::exception_ptr decode_exception(ResultView view);

}  // namespace cancellable::detail
