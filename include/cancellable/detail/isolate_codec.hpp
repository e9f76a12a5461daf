// Internal: how an isolate's result (and a task's arguments) is encoded in
// one process and decoded in the other. The rules of what may cross are in
// the public header crossing.hpp (CrossesProcesses<T>).
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <complex>
#include <cstdint>
#include <cstring>
#include <istream>
#include <span>
#include <string_view>
#include <ostream>
#include <streambuf>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/pfr/core.hpp>
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

// Types whose value names memory: pointers, member pointers, views, and any
// class template instance with such an argument (std::vector<std::string_view>,
// std::optional<const char*>, ...).
template <class T>
struct holds_addresses
    : std::bool_constant<std::is_pointer_v<T> || std::is_member_pointer_v<T> ||
                         std::is_null_pointer_v<T> || std::is_reference_v<T>> {};
template <class T>
inline constexpr bool holds_addresses_v = holds_addresses<std::remove_cv_t<T>>::value;
template <class C, class Traits>
struct holds_addresses<std::basic_string_view<C, Traits>> : std::true_type {};
template <class T, std::size_t N>
struct holds_addresses<std::span<T, N>> : std::true_type {};
template <class T, std::size_t N>
struct holds_addresses<std::array<T, N>> : std::bool_constant<holds_addresses_v<T>> {};
template <class T, std::size_t N>
struct holds_addresses<T[N]> : std::bool_constant<holds_addresses_v<T>> {};
template <template <class...> class C, class... A>
struct holds_addresses<C<A...>> : std::bool_constant<(holds_addresses_v<A> || ...)> {};

template <class T>
struct is_std_array : std::false_type {};
template <class T, std::size_t N>
struct is_std_array<std::array<T, N>> : std::true_type {};
template <class T>
struct is_complex : std::false_type {};
template <class T>
struct is_complex<std::complex<T>> : std::true_type {};
template <class T>
struct is_duration : std::false_type {};
template <class Rep, class Period>
struct is_duration<std::chrono::duration<Rep, Period>> : std::true_type {};
template <class T>
struct is_time_point : std::false_type {};
template <class Clock, class Duration>
struct is_time_point<std::chrono::time_point<Clock, Duration>> : std::true_type {};

template <class T>
constexpr bool is_plain_data();

template <class T, std::size_t... I>
constexpr bool all_fields_plain(std::index_sequence<I...>) {
  return (is_plain_data<boost::pfr::tuple_element_t<I, T>>() && ...);
}

// Values whose bytes mean the same in any process (see above).
template <class T>
constexpr bool is_plain_data() {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_arithmetic_v<U> || std::is_enum_v<U>) {
    return true;
  } else if constexpr (std::is_array_v<U>) {
    return std::extent_v<U> > 0 && is_plain_data<std::remove_extent_t<U>>();
  } else if constexpr (is_std_array<U>::value || is_complex<U>::value) {
    return is_plain_data<typename U::value_type>();
  } else if constexpr (is_duration<U>::value) {
    return is_plain_data<typename U::rep>();
  } else if constexpr (is_time_point<U>::value) {
    return is_plain_data<typename U::duration>();
  } else if constexpr (std::is_class_v<U> && std::is_aggregate_v<U> &&
                       std::is_trivially_copyable_v<U> && !holds_addresses_v<U>) {
    // A struct without constructors or private members, whose fields
    // Boost.PFR can list.
    return all_fields_plain<U>(std::make_index_sequence<boost::pfr::tuple_size_v<U>>{});
  } else {
    return false;
  }
}

// Copied byte for byte: plain data without a cereal serialize function.
template <class T>
constexpr bool is_raw_copyable() {
  if constexpr (holds_addresses_v<T>) {
    return false;  // (never asks cereal, which rejects raw pointers with its own message)
  } else {
    return !cereal_serializable_v<T> && is_plain_data<T>();
  }
}
template <class T>
inline constexpr bool raw_copyable_v = is_raw_copyable<T>();

template <class T>
struct is_raw_vector : std::false_type {};
template <class T, class A>
struct is_raw_vector<std::vector<T, A>> : std::bool_constant<raw_copyable_v<T>> {};

template <class T>
struct is_std_tuple : std::false_type {};
template <class... A>
struct is_std_tuple<std::tuple<A...>> : std::true_type {};

template <class R>
void encode_one(const R& value, std::ostream& out) {
  static_assert(!holds_addresses_v<R>,
                "an isolate's result must be plain data (numbers, enums, std::array, structs of "
                "these) or serializable with cereal (give your type a serialize(Archive&) "
                "member). Pointers, std::string_view, std::span and types holding them would "
                "arrive as addresses in the worker's memory: return std::string, std::vector or "
                "a struct of values instead");
  if constexpr (holds_addresses_v<R>) {
    (void)value;
    (void)out;
  } else if constexpr (raw_copyable_v<R>) {
    out.write(reinterpret_cast<const char*>(&value), sizeof(R));
  } else if constexpr (is_raw_vector<R>::value) {
    const std::uint64_t count = value.size();
    out.write(reinterpret_cast<const char*>(&count), sizeof count);
    out.write(reinterpret_cast<const char*>(value.data()),
              static_cast<std::streamsize>(count * sizeof(typename R::value_type)));
  } else {
    static_assert(cereal_serializable_v<R>,
                  "an isolate's result must be plain data (numbers, enums, std::array, structs of "
                  "these) or serializable with cereal (give your type a serialize(Archive&) "
                  "member). Pointers, std::string_view, std::span and structs holding them would "
                  "arrive as addresses in the worker's memory: return std::string, std::vector or "
                  "a struct of values instead");
    cereal::BinaryOutputArchive archive(out);
    archive(value);
  }
}

// A value, or a std::tuple (a task's arguments) element by element, so that
// whatever may be a result (plain data included, which cereal cannot take)
// may be an argument. Each element's encoding ends where its decoder stops.
template <class R>
void encode_result(const R& value, std::ostream& out) {
  if constexpr (is_std_tuple<R>::value) {
    std::apply([&out](const auto&... element) { (encode_one(element, out), ...); }, value);
  } else {
    encode_one(value, out);
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

// One element of a tuple, from where the stream stands.
template <class T>
T decode_part(std::istream& in) {
  if constexpr (holds_addresses_v<T>) {
    throw_truncated_result();  // (does not compile: see encode_result)
  } else if constexpr (raw_copyable_v<T>) {
    T value;
    if (!in.read(reinterpret_cast<char*>(&value), sizeof(T))) throw_truncated_result();
    return value;
  } else if constexpr (is_raw_vector<T>::value) {
    std::uint64_t count = 0;
    if (!in.read(reinterpret_cast<char*>(&count), sizeof count)) throw_truncated_result();
    using E = typename T::value_type;
    const auto left = static_cast<std::uint64_t>(std::max<std::streamsize>(in.rdbuf()->in_avail(), 0));
    if (count > left / sizeof(E)) throw_truncated_result();
    T value(count);
    if (!in.read(reinterpret_cast<char*>(value.data()), static_cast<std::streamsize>(count * sizeof(E))))
      throw_truncated_result();
    return value;
  } else {
    cereal::BinaryInputArchive archive(in);
    T value{};
    try {
      archive(value);
    } catch (const cereal::Exception& e) {
      throw IsolateError("cereal::Exception", e.what());
    }
    return value;
  }
}

template <class Tuple, std::size_t... I>
Tuple decode_tuple(std::istream& in, std::index_sequence<I...>) {
  // (Braced: the elements are decoded in order.)
  return Tuple{decode_part<std::tuple_element_t<I, Tuple>>(in)...};
}

template <class R>
R decode_result(ResultView view) {
  if constexpr (is_std_tuple<R>::value) {
    ViewStreambuf buffer(view);
    std::istream in(&buffer);
    return decode_tuple<R>(in, std::make_index_sequence<std::tuple_size_v<R>>{});
  } else if constexpr (holds_addresses_v<R>) {
    throw_truncated_result();  // (does not compile: see encode_result)
  } else if constexpr (raw_copyable_v<R>) {
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
