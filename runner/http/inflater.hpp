// Content-Encoding of response bodies, decoded as curl does: gzip (x-gzip),
// and "deflate" both as RFC 9110 means it (a zlib stream) and as many
// servers send it (a raw deflate stream without the zlib header). Anything
// else (identity, br, zstd) passes through untouched.
#pragma once

#include <cstddef>
#include <string>

#include <zlib.h>

namespace cancellable::http::detail {

class Inflater {
 public:
  // max_ratio: decoded bytes per compressed byte allowed once the decoded
  // body passes kRatioFloor (0: no limit).
  static constexpr std::size_t kRatioFloor = std::size_t{1} << 20;

  Inflater() = default;
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;
  ~Inflater();

  // encoding: the Content-Encoding header, any case.
  void start(const std::string& encoding, std::size_t max_ratio);
  bool active() const noexcept { return mode_ != Mode::identity; }

  // Appends the decoding of [data, data+size) to `out` and counts it in
  // `total` (the body decoded so far), throwing HttpError(protocol) for a
  // corrupt stream and HttpError(body_too_large) the moment `total` would
  // pass `limit` or the ratio is exceeded (never holding more than one 64 KiB
  // buffer past either).
  void feed(const char* data, std::size_t size, std::string& out, std::size_t& total, std::size_t limit,
            const std::string& context);

 private:
  enum class Mode { identity, gzip, deflate_unknown, zlib, raw };
  void init(int window_bits);
  void finish_zlib();

  z_stream zs_{};
  Mode mode_ = Mode::identity;
  bool initialised_ = false;
  bool ended_ = false;
  std::size_t max_ratio_ = 0;
  std::size_t compressed_ = 0;
  std::size_t decoded_ = 0;
  std::string head_;  // The first byte of a "deflate" body, until its second says which kind it is.
};

}  // namespace cancellable::http::detail
