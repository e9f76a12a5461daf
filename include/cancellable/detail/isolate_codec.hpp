// Internal: how an isolate's result is encoded in the worker and decoded in
// the parent.
//
//   - trivially copyable types (numbers, enums, plain structs) and vectors of
//     them without a cereal serialize function: their bytes, copied once;
//   - everything else: cereal's binary archive (strings, vectors, arrays,
//     maps, optionals, pairs, tuples, variants, nested, and user types with a
//     serialize member or function). Contiguous arithmetic data inside them is
//     still written with one copy.
#pragma once

#include <cstring>
#include <istream>
#include <ostream>
#include <streambuf>
#include <type_traits>
#include <vector>

#include <cereal/archives/binary.hpp>
#include <cereal/types/array.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/set.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>
#include <cereal/types/unordered_map.hpp>
#include <cereal/types/unordered_set.hpp>
#include <cereal/types/utility.hpp>
#include <cereal/types/variant.hpp>
#include <cereal/types/vector.hpp>

#include "cancellable/detail/isolate_runtime.hpp"
#include "cancellable/isolate_errors.hpp"

namespace cancellable::detail {

template <class T>
inline constexpr bool cereal_serializable_v =
    cereal::traits::is_output_serializable<T, cereal::BinaryOutputArchive>::value &&
    cereal::traits::is_input_serializable<T, cereal::BinaryInputArchive>::value;

template <class T>
inline constexpr bool raw_copyable_v =
    std::is_trivially_copyable_v<T> && !std::is_pointer_v<T> && !cereal_serializable_v<T>;

template <class T>
struct is_raw_vector : std::false_type {};
template <class T, class A>
struct is_raw_vector<std::vector<T, A>> : std::bool_constant<raw_copyable_v<T>> {};

template <class R>
void encode_result(const R& value, std::ostream& out) {
  if constexpr (raw_copyable_v<R>) {
    out.write(reinterpret_cast<const char*>(&value), sizeof(R));
  } else if constexpr (is_raw_vector<R>::value) {
    const std::uint64_t count = value.size();
    out.write(reinterpret_cast<const char*>(&count), sizeof count);
    out.write(reinterpret_cast<const char*>(value.data()),
              static_cast<std::streamsize>(count * sizeof(typename R::value_type)));
  } else {
    static_assert(cereal_serializable_v<R>,
                  "an isolate's result must be trivially copyable or serializable with cereal "
                  "(give your type a serialize(Archive&) member)");
    cereal::BinaryOutputArchive archive(out);
    archive(value);
  }
}

// A read-only streambuf over the result bytes.
class ViewStreambuf : public std::streambuf {
 public:
  explicit ViewStreambuf(ResultView view) {
    char* begin = const_cast<char*>(view.data);
    setg(begin, begin, begin + view.size);
  }
};

[[noreturn]] inline void throw_truncated_result() {
  throw IsolateError("cancellable::detail::ResultView", "the isolate's result is truncated");
}

template <class R>
R decode_result(ResultView view) {
  if constexpr (raw_copyable_v<R>) {
    if (view.size != sizeof(R)) throw_truncated_result();
    R value;
    std::memcpy(static_cast<void*>(&value), view.data, sizeof(R));
    return value;
  } else if constexpr (is_raw_vector<R>::value) {
    std::uint64_t count = 0;
    if (view.size < sizeof count) throw_truncated_result();
    std::memcpy(&count, view.data, sizeof count);
    using T = typename R::value_type;
    if (count > (view.size - sizeof count) / sizeof(T)) throw_truncated_result();
    R value(count);
    std::memcpy(static_cast<void*>(value.data()), view.data + sizeof count, count * sizeof(T));
    return value;
  } else {
    ViewStreambuf buffer(view);
    std::istream in(&buffer);
    cereal::BinaryInputArchive archive(in);
    R value{};
    try {
      archive(value);
    } catch (const cereal::Exception& e) {
      throw IsolateError("cereal::Exception", e.what());
    }
    return value;
  }
}

}  // namespace cancellable::detail
