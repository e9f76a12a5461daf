#include "runner/http/inflater.hpp"

#include <cctype>
#include <new>

#include "cancellable/http.hpp"

namespace cancellable::http::detail {

Inflater::~Inflater() { finish_zlib(); }

void Inflater::finish_zlib() {
  if (initialised_) inflateEnd(&zs_);
  initialised_ = false;
}

void Inflater::init(int window_bits) {
  finish_zlib();
  zs_ = {};
  if (inflateInit2(&zs_, window_bits) != Z_OK) throw std::bad_alloc();
  initialised_ = true;
}

void Inflater::start(const std::string& encoding, std::size_t max_ratio) {
  finish_zlib();
  std::string e;
  for (char c : encoding)
    if (!std::isspace(static_cast<unsigned char>(c))) e += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  ended_ = false;
  head_.clear();
  compressed_ = decoded_ = 0;
  max_ratio_ = max_ratio;
  if (e == "gzip" || e == "x-gzip") {
    mode_ = Mode::gzip;
    init(16 + MAX_WBITS);
  } else if (e == "deflate") {
    mode_ = Mode::deflate_unknown;
  } else {
    mode_ = Mode::identity;
  }
}

void Inflater::feed(const char* data, std::size_t size, std::string& out, std::size_t& total, std::size_t limit,
                    const std::string& context) {
  auto too_large = [&](const std::string& why) {
    throw HttpError(HttpError::Kind::body_too_large, context + ": " + why);
  };
  if (mode_ == Mode::identity) {
    if (size > limit || total > limit - size)
      too_large("the body is larger than " + std::to_string(limit) + " bytes (ClientOptions::max_body_bytes)");
    out.append(data, size);
    total += size;
    return;
  }
  if (mode_ == Mode::deflate_unknown) {
    // RFC 1950: a zlib stream starts with CMF (method 8) and FLG such that
    // CMF*256+FLG is a multiple of 31; anything else is raw deflate (curl
    // tells them apart the same way, by trying).
    std::size_t had = head_.size();
    head_.append(data, std::min<std::size_t>(size, 2 - had));
    if (head_.size() < 2) return;
    auto cmf = static_cast<unsigned char>(head_[0]), flg = static_cast<unsigned char>(head_[1]);
    bool zlib = (cmf & 0x0f) == 8 && (cmf >> 4) <= 7 && (cmf * 256u + flg) % 31 == 0;
    mode_ = zlib ? Mode::zlib : Mode::raw;
    init(zlib ? MAX_WBITS : -MAX_WBITS);
    if (had > 0) feed(head_.data(), had, out, total, limit, context);  // (The byte an earlier call held back.)
  }
  if (ended_) return;  // (Bytes after the end of the stream are ignored, as curl does.)
  compressed_ += size;
  char buf[65536];
  zs_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data));
  zs_.avail_in = static_cast<uInt>(size);
  while (zs_.avail_in > 0 && !ended_) {
    zs_.next_out = reinterpret_cast<Bytef*>(buf);
    zs_.avail_out = sizeof buf;
    int rc = inflate(&zs_, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR)
      throw HttpError(HttpError::Kind::protocol,
                      context + ": the compressed body is corrupt: " + (zs_.msg ? zs_.msg : "zlib error"));
    std::size_t n = sizeof buf - zs_.avail_out;
    if (n > limit || total > limit - n)
      too_large("the decoded body is larger than " + std::to_string(limit) + " bytes (ClientOptions::max_body_bytes)");
    decoded_ += n;
    if (max_ratio_ && decoded_ > kRatioFloor && decoded_ / max_ratio_ > compressed_)
      too_large("the body decodes to more than " + std::to_string(max_ratio_) +
                " times its compressed size (ClientOptions::max_decompression_ratio)");
    out.append(buf, n);
    total += n;
    if (rc == Z_STREAM_END) ended_ = true;
    if (rc == Z_BUF_ERROR && n == 0) break;
  }
}

}  // namespace cancellable::http::detail
