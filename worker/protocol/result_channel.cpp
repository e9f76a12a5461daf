#include "worker/protocol/result_channel.hpp"

#include <cxxabi.h>
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <new>
#include <random>
#include <stdexcept>
#include <typeinfo>

#include "cancellable/exceptions.hpp"
#include "cancellable/isolate_errors.hpp"

namespace bip = boost::interprocess;

namespace cancellable::detail {

namespace {

constexpr const char* kShmPrefix = "cancellable.";

std::string demangle(const char* mangled) {
  int status = 0;
  char* readable = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string out = status == 0 && readable ? readable : mangled;
  std::free(readable);
  return out;
}

// How an exception crosses the boundary.
enum class ExceptionKind : std::uint32_t {
  other = 0,  // a registered type (by its codec), else IsolateError
  logic_error,
  invalid_argument,
  domain_error,
  length_error,
  out_of_range,
  runtime_error,
  range_error,
  overflow_error,
  underflow_error,
  bad_alloc,
  bad_array_new_length,
  cancelled,          // extra0: 1 if it has a reason (carried in `what`)
  timeout,            // extra0: nanoseconds
  memory_limit,       // extra0: limit in bytes
  result_too_large,   // extra0: result bytes, extra1: limit bytes
  system_error,       // extra0: error value, extra1: 1 if generic category
  filesystem_error,   // extra0: error value, extra1: 1 if generic; what: path1
};

struct EncodedException {
  ExceptionKind kind = ExceptionKind::other;
  std::uint64_t extra0 = 0;
  std::uint64_t extra1 = 0;
  std::string type_name;  // mangled, for `other`
  std::string what;
};

// The registered codecs: a list that only grows, read without a lock (a
// forked worker reads it whatever the parent's other threads were doing). A
// later registration of a type shadows the earlier ones.
struct CodecNode {
  const std::type_info* type;
  IsolateExceptionCodec codec;
  CodecNode* next;
};
constinit std::atomic<CodecNode*> codecs{nullptr};

const CodecNode* find_codec(const std::type_info& type) noexcept {
  for (const CodecNode* n = codecs.load(std::memory_order_acquire); n; n = n->next) {
    if (*n->type == type) return n;
  }
  return nullptr;
}

const CodecNode* find_codec(const std::string& mangled_name) noexcept {
  for (const CodecNode* n = codecs.load(std::memory_order_acquire); n; n = n->next) {
    if (mangled_name == n->type->name()) return n;
  }
  return nullptr;
}

template <class T>
bool is_exactly(const std::exception& e) {
  return typeid(e) == typeid(T);
}

EncodedException classify(const std::exception_ptr& error,
                          const std::optional<std::size_t>& memory_limit) {
  EncodedException out;
  // A registered type (exactly) goes by its codec, whatever it derives from.
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    if (const CodecNode* node = find_codec(typeid(e))) {
      out.type_name = typeid(e).name();
      out.what = node->codec.encode(e);
      return out;
    }
  } catch (...) {
  }
  try {
    std::rethrow_exception(error);
  } catch (const CancelledException& e) {
    out.kind = ExceptionKind::cancelled;
    out.extra0 = e.reason() ? 1 : 0;
    out.what = e.reason().value_or("");
    if (!is_exactly<CancelledException>(e)) {
      out.kind = ExceptionKind::other;
      out.type_name = typeid(e).name();
      out.what = e.what();
    }
  } catch (const TimeoutException& e) {
    out.kind = ExceptionKind::timeout;
    out.extra0 = static_cast<std::uint64_t>(e.timeout().count());
    out.what = e.what();
    if (!is_exactly<TimeoutException>(e)) {
      out.kind = ExceptionKind::other;
      out.type_name = typeid(e).name();
    }
  } catch (const ResultTooLarge& e) {
    out.kind = ExceptionKind::result_too_large;
    out.extra0 = e.result_bytes();
    out.extra1 = e.limit_bytes();
    out.what = e.what();
  } catch (const std::filesystem::filesystem_error& e) {
    out.kind = ExceptionKind::filesystem_error;
    out.extra0 = static_cast<std::uint64_t>(e.code().value());
    out.extra1 = e.code().category() == std::generic_category() ? 1 : 0;
    out.type_name = e.path1().string();
    out.what = e.what();
  } catch (const std::system_error& e) {
    out.kind = ExceptionKind::system_error;
    out.extra0 = static_cast<std::uint64_t>(e.code().value());
    out.extra1 = e.code().category() == std::generic_category() ? 1 : 0;
    out.what = e.what();
  } catch (const bip::interprocess_exception& e) {
    // Mapping or growing the result's shared memory failed for want of
    // memory: under a memory limit, that is the limit.
    if (memory_limit && (e.get_error_code() == bip::out_of_memory_error || e.get_native_error() == ENOMEM)) {
      out.kind = ExceptionKind::memory_limit;
      out.extra0 = *memory_limit;
    } else {
      out.type_name = typeid(e).name();
    }
    out.what = e.what();
  } catch (const std::bad_alloc& e) {
    if (memory_limit) {
      out.kind = ExceptionKind::memory_limit;
      out.extra0 = *memory_limit;
    } else if (is_exactly<std::bad_array_new_length>(e)) {
      out.kind = ExceptionKind::bad_array_new_length;
    } else if (is_exactly<std::bad_alloc>(e)) {
      out.kind = ExceptionKind::bad_alloc;
    } else {
      out.type_name = typeid(e).name();
    }
    out.what = e.what();
  } catch (const std::exception& e) {
    out.what = e.what();
    const std::type_info& t = typeid(e);
    if (t == typeid(std::logic_error)) out.kind = ExceptionKind::logic_error;
    else if (t == typeid(std::invalid_argument)) out.kind = ExceptionKind::invalid_argument;
    else if (t == typeid(std::domain_error)) out.kind = ExceptionKind::domain_error;
    else if (t == typeid(std::length_error)) out.kind = ExceptionKind::length_error;
    else if (t == typeid(std::out_of_range)) out.kind = ExceptionKind::out_of_range;
    else if (t == typeid(std::runtime_error)) out.kind = ExceptionKind::runtime_error;
    else if (t == typeid(std::range_error)) out.kind = ExceptionKind::range_error;
    else if (t == typeid(std::overflow_error)) out.kind = ExceptionKind::overflow_error;
    else if (t == typeid(std::underflow_error)) out.kind = ExceptionKind::underflow_error;
    else out.type_name = t.name();
  } catch (...) {
    const std::type_info* t = abi::__cxa_current_exception_type();
    out.type_name = t ? t->name() : "unknown";
  }
  return out;
}

void put_u64(std::string& out, std::uint64_t v) { out.append(reinterpret_cast<const char*>(&v), 8); }

std::uint64_t get_u64(ResultView view, std::size_t& at) {
  if (at + 8 > view.size) throw IsolateError("cancellable::detail::ResultView", "truncated exception");
  std::uint64_t v;
  std::memcpy(&v, view.data + at, 8);
  at += 8;
  return v;
}

std::string get_string(ResultView view, std::size_t& at) {
  const auto n = get_u64(view, at);
  if (n > view.size - at) throw IsolateError("cancellable::detail::ResultView", "truncated exception");
  std::string s(view.data + at, n);
  at += n;
  return s;
}

// what without the prefix and suffix a standard constructor adds (when present).
std::string without_affixes(const std::string& what, const std::string& prefix,
                            const std::string& suffix) {
  std::string out = what;
  if (out.rfind(prefix, 0) == 0) out.erase(0, prefix.size());
  if (out.size() >= suffix.size() && out.compare(out.size() - suffix.size(), suffix.size(), suffix) == 0) {
    out.erase(out.size() - suffix.size());
  }
  return out;
}

}  // namespace

void register_isolate_exception(const std::type_info& type, IsolateExceptionCodec codec) {
  const CodecNode* known = find_codec(type);
  if (known && known->codec.encode == codec.encode && known->codec.decode == codec.decode) return;
  // Never freed: a worker forked at any moment may be reading it.
  auto* node = new CodecNode{&type, codec, codecs.load(std::memory_order_relaxed)};
  while (!codecs.compare_exchange_weak(node->next, node, std::memory_order_release, std::memory_order_relaxed)) {
  }
}

std::string make_result_shm_name() {
  static std::atomic<std::uint64_t> counter{0};
  static const std::uint64_t secret = [] {
    std::random_device device;
    return (static_cast<std::uint64_t>(device()) << 32) ^ device();
  }();
  const auto n = counter.fetch_add(1, std::memory_order_relaxed);
  // Unguessable: a keyed mix of the counter (splitmix64 of secret ^ n).
  std::uint64_t z = secret ^ (n * 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  char name[64];
  std::snprintf(name, sizeof name, "%s%d.%llu.%016llx", kShmPrefix, static_cast<int>(::getpid()),
                static_cast<unsigned long long>(n), static_cast<unsigned long long>(z));
  return name;
}

void remove_result_shm(const char* name) noexcept {
  if (name == nullptr || name[0] == '\0') return;
  try {
    bip::shared_memory_object::remove(name);
  } catch (...) {
  }
}

void sweep_stale_result_shm() noexcept {
  DIR* dir = ::opendir("/dev/shm");
  if (!dir) return;
  const uid_t me = ::geteuid();
  while (dirent* entry = ::readdir(dir)) {
    const char* name = entry->d_name;
    if (std::strncmp(name, kShmPrefix, std::strlen(kShmPrefix)) != 0) continue;
    const long pid = std::strtol(name + std::strlen(kShmPrefix), nullptr, 10);
    if (pid <= 0 || pid == ::getpid()) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    struct stat st {};
    std::string path = std::string("/dev/shm/") + name;
    if (::stat(path.c_str(), &st) != 0 || st.st_uid != me) continue;
    remove_result_shm(name);
  }
  ::closedir(dir);
}

std::string encode_exception(const std::exception_ptr& error, std::optional<std::size_t> memory_limit_bytes,
                             std::size_t max_bytes) {
  EncodedException e = classify(error, memory_limit_bytes);
  // A what() (or type name) of any size still fits max_bytes: cut to fit,
  // and say so.
  constexpr std::size_t kHeader = 5 * 8;
  constexpr std::size_t kMinimumText = 256;
  const std::size_t room = std::max(max_bytes, kHeader + 2 * kMinimumText) - kHeader;
  if (e.type_name.size() > room / 2) e.type_name.resize(room / 2);
  if (e.what.size() > room - e.type_name.size()) {
    const std::string note = " [truncated from " + std::to_string(e.what.size()) + " bytes]";
    e.what.resize(room - e.type_name.size() - note.size());
    e.what += note;
  }
  std::string bytes;
  bytes.reserve(40 + e.type_name.size() + e.what.size());
  put_u64(bytes, static_cast<std::uint64_t>(e.kind));
  put_u64(bytes, e.extra0);
  put_u64(bytes, e.extra1);
  put_u64(bytes, e.type_name.size());
  bytes += e.type_name;
  put_u64(bytes, e.what.size());
  bytes += e.what;
  return bytes;
}

// --- worker side ----------------------------------------------------------------

ChildChannelImpl::ChildChannelImpl(ControlBlock* block, ChildLimits limits)
    : block_(block),
      limits_(limits),
      base_(InlinePayload::data(block)),
      capacity_(InlinePayload::capacity()),
      stream_(this) {}

ChildChannelImpl::~ChildChannelImpl() = default;

void ChildChannelImpl::reset() {
  size_ = 0;
  total_ = 0;
  over_limit_ = false;
  stream_.clear();
}

void ChildChannelImpl::reserve(std::size_t needed) {
  if (needed <= capacity_) return;
  std::size_t capacity = std::max<std::size_t>(needed, 1 << 20);
  if (!shm_) {
    block_->shm_claimed.store(1, std::memory_order_release);
    bip::permissions owner_only;
    owner_only.set_permissions(0600);
    shm_ = std::make_unique<bip::shared_memory_object>(bip::create_only, block_->shm_name,
                                                       bip::read_write, owner_only);
    shm_->truncate(static_cast<bip::offset_t>(capacity));
    region_ = std::make_unique<bip::mapped_region>(*shm_, bip::read_write);
    std::memcpy(region_->get_address(), base_, size_);
  } else {
    capacity = std::max(needed, capacity_ * 2);
    shm_->truncate(static_cast<bip::offset_t>(capacity));
    // Map the grown object anew; what was written stays in the object.
    region_ = std::make_unique<bip::mapped_region>(*shm_, bip::read_write);
  }
  base_ = static_cast<char*>(region_->get_address());
  capacity_ = capacity;
}

std::streamsize ChildChannelImpl::xsputn(const char* s, std::streamsize n) {
  const auto count = static_cast<std::size_t>(n);
  total_ += count;
  if (over_limit_ || total_ > limits_.max_result_bytes) {
    over_limit_ = true;
    return n;
  }
  reserve(size_ + count);
  std::memcpy(base_ + size_, s, count);
  size_ += count;
  return n;
}

ChildChannelImpl::int_type ChildChannelImpl::overflow(int_type ch) {
  if (traits_type::eq_int_type(ch, traits_type::eof())) return traits_type::not_eof(ch);
  const char c = traits_type::to_char_type(ch);
  xsputn(&c, 1);
  return ch;
}

void ChildChannelImpl::publish(Outcome outcome) {
  block_->payload_bytes.store(size_, std::memory_order_relaxed);
  block_->payload_in_shm.store(base_ == InlinePayload::data(block_) ? 0 : 1,
                               std::memory_order_relaxed);
  block_->outcome.store(static_cast<std::uint32_t>(outcome), std::memory_order_release);
}

void ChildChannelImpl::commit_result() {
  stream_.flush();
  if (over_limit_) {
    const auto produced = total_;
    write_exception(std::make_exception_ptr(ResultTooLarge(produced, limits_.max_result_bytes)));
    return;
  }
  publish(Outcome::value);
}

void ChildChannelImpl::write_exception(const std::exception_ptr& error) {
  const std::string bytes = encode_exception(error, limits_.memory_limit_bytes, limits_.max_result_bytes);
  reset();
  // Cut to fit in encode_exception; never refused for size (a limit under
  // 552 bytes still lets the exception's kind and the start of its text
  // through).
  limits_.max_result_bytes = std::max(limits_.max_result_bytes, bytes.size());
  xsputn(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  publish(Outcome::exception);
}

void ChildChannelImpl::commit_current_exception() noexcept {
  try {
    write_exception(std::current_exception());
  } catch (...) {
    // Nothing can be reported (out of memory while encoding): the parent sees
    // "ended without a result".
  }
}

// --- parent side ----------------------------------------------------------------

ResultReader::ResultReader(const ControlBlock* block, const std::string& shm_name,
                           std::size_t max_result_bytes)
    : outcome_(Outcome::none) {
  // The worker could write the control block: each value is checked before
  // it is acted on, and the object's name is the parent's own copy.
  const auto outcome = block->outcome.load(std::memory_order_acquire);
  if (outcome != static_cast<std::uint32_t>(Outcome::value) &&
      outcome != static_cast<std::uint32_t>(Outcome::exception)) {
    return;  // none, or not a value the protocol knows: no outcome
  }
  outcome_ = static_cast<Outcome>(outcome);
  const auto size = block->payload_bytes.load(std::memory_order_relaxed);
  if (block->payload_in_shm.load(std::memory_order_relaxed) == 0) {
    view_ = {InlinePayload::data(const_cast<ControlBlock*>(block)),
             static_cast<std::size_t>(std::min<std::uint64_t>(size, InlinePayload::capacity()))};
    return;
  }
  // An exception is cut to fit max_result_bytes, with a floor (see write_exception).
  const std::uint64_t allowed = std::max<std::uint64_t>(max_result_bytes, 4096);
  if (size > allowed) {
    throw IsolateError("cancellable::detail::ResultReader",
                       "the worker reported a result of " + std::to_string(size) +
                           " bytes, over max_result_bytes");
  }
  bip::shared_memory_object shm(bip::open_only, shm_name.c_str(), bip::read_only);
  // The mapping outlives the name: remove it before anyone sees the result.
  remove_result_shm(shm_name.c_str());
  bip::offset_t object_size = 0;
  shm.get_size(object_size);
  const auto mapped = std::min<std::uint64_t>(size, static_cast<std::uint64_t>(std::max<bip::offset_t>(object_size, 0)));
  if (mapped == 0) {
    view_ = {nullptr, 0};
    return;
  }
  region_ = std::make_unique<bip::mapped_region>(shm, bip::read_only, 0, static_cast<std::size_t>(mapped));
  view_ = {static_cast<const char*>(region_->get_address()), static_cast<std::size_t>(mapped)};
}

ResultReader::~ResultReader() { region_.reset(); }

std::exception_ptr decode_exception(ResultView view) {
  std::size_t at = 0;
  const auto kind = static_cast<ExceptionKind>(get_u64(view, at));
  const auto extra0 = get_u64(view, at);
  const auto extra1 = get_u64(view, at);
  const auto type_name = get_string(view, at);
  const auto what = get_string(view, at);
  switch (kind) {
    case ExceptionKind::logic_error: return std::make_exception_ptr(std::logic_error(what));
    case ExceptionKind::invalid_argument: return std::make_exception_ptr(std::invalid_argument(what));
    case ExceptionKind::domain_error: return std::make_exception_ptr(std::domain_error(what));
    case ExceptionKind::length_error: return std::make_exception_ptr(std::length_error(what));
    case ExceptionKind::out_of_range: return std::make_exception_ptr(std::out_of_range(what));
    case ExceptionKind::runtime_error: return std::make_exception_ptr(std::runtime_error(what));
    case ExceptionKind::range_error: return std::make_exception_ptr(std::range_error(what));
    case ExceptionKind::overflow_error: return std::make_exception_ptr(std::overflow_error(what));
    case ExceptionKind::underflow_error: return std::make_exception_ptr(std::underflow_error(what));
    case ExceptionKind::bad_alloc: return std::make_exception_ptr(std::bad_alloc());
    case ExceptionKind::bad_array_new_length:
      return std::make_exception_ptr(std::bad_array_new_length());
    case ExceptionKind::cancelled:
      return extra0 ? std::make_exception_ptr(CancelledException(what))
                    : std::make_exception_ptr(CancelledException());
    case ExceptionKind::timeout:
      return std::make_exception_ptr(
          TimeoutException(std::chrono::nanoseconds(static_cast<std::int64_t>(extra0))));
    case ExceptionKind::memory_limit:
      return std::make_exception_ptr(MemoryLimitExceeded(extra0));
    case ExceptionKind::result_too_large:
      return std::make_exception_ptr(ResultTooLarge(extra0, extra1));
    case ExceptionKind::system_error: {
      const std::error_code code(static_cast<int>(extra0),
                                 extra1 ? std::generic_category() : std::system_category());
      // The constructor appends ": <message>" again: pass what() without it.
      return std::make_exception_ptr(
          std::system_error(code, without_affixes(what, "", ": " + code.message())));
    }
    case ExceptionKind::filesystem_error: {
      const std::error_code code(static_cast<int>(extra0),
                                 extra1 ? std::generic_category() : std::system_category());
      const std::string suffix = ": " + code.message() + " [" + type_name + "]";
      return std::make_exception_ptr(std::filesystem::filesystem_error(
          without_affixes(what, "filesystem error: ", suffix), std::filesystem::path(type_name), code));
    }
    case ExceptionKind::other:
      break;
  }
  // The registered type's decode runs without any lock.
  if (const CodecNode* node = find_codec(type_name)) {
    if (auto decoded = node->codec.decode(what)) return decoded;
  }
  return std::make_exception_ptr(IsolateError(demangle(type_name.c_str()), what));
}

}  // namespace cancellable::detail
