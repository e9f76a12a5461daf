#include "cancellable/json_generator.hpp"

#include <array>
#include <cstdio>

namespace cancellable {

namespace {

// splitmix64: small, fast, and the same everywhere.
class Random {
 public:
  explicit Random(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  std::size_t below(std::size_t n) { return static_cast<std::size_t>(next() % n); }

 private:
  std::uint64_t state_;
};

constexpr std::array<const char*, 8> kFirst = {"Ada", "Grace", "Linus", "Zoë", "José", "Björk",
                                               "Søren", "Mia"};
constexpr std::array<const char*, 6> kCity = {"Zürich", "São Paulo", "Kraków", "東京", "Reykjavík",
                                              "New York"};
constexpr std::array<const char*, 6> kTag = {"admin", "beta", "early-adopter", "vip", "☕ lover",
                                             "🚀 launch"};
constexpr std::array<const char*, 4> kBio = {
    "Writes \\\"careful\\\" code.\\nLikes tabs\\tand newlines.",
    "Path: C:\\\\Users\\\\guest \\u00e9t\\u00e9",
    "Emoji: \\ud83d\\ude00 and plain 😀",
    "Quote: \\\"Premature optimization is the root of all evil.\\\" \\/ Knuth"};

void append_number(std::string& out, double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.6g", value);
  out += buffer;
}

void append_record(std::string& out, std::uint64_t id, Random& random) {
  out += "{\"id\":";
  out += std::to_string(id);
  out += ",\"name\":\"";
  out += kFirst[random.below(kFirst.size())];
  out += " ";
  out += std::to_string(random.below(100000));
  out += "\",\"email\":\"user";
  out += std::to_string(id);
  out += "@example.com\",\"active\":";
  out += random.below(2) ? "true" : "false";
  out += ",\"score\":";
  append_number(out, static_cast<double>(random.below(1000000)) / 100.0 - 2500.0);
  out += ",\"balance\":";
  append_number(out, static_cast<double>(random.next() % 10000000) * 1e-3);
  out += ",\"tags\":[";
  const std::size_t tags = random.below(4);
  for (std::size_t i = 0; i < tags; ++i) {
    if (i) out += ',';
    out += '"';
    out += kTag[random.below(kTag.size())];
    out += '"';
  }
  out += "],\"address\":{\"city\":\"";
  out += kCity[random.below(kCity.size())];
  out += "\",\"zip\":\"";
  out += std::to_string(1000 + random.below(9000));
  out += "\",\"geo\":{\"lat\":";
  append_number(out, static_cast<double>(random.below(180000)) / 1000.0 - 90.0);
  out += ",\"lng\":";
  append_number(out, static_cast<double>(random.below(360000)) / 1000.0 - 180.0);
  out += "}},\"bio\":\"";
  out += kBio[random.below(kBio.size())];
  out += "\",\"friends\":[";
  const std::size_t friends = random.below(6);
  for (std::size_t i = 0; i < friends; ++i) {
    if (i) out += ',';
    out += std::to_string(random.below(1000000));
  }
  out += "],\"manager\":";
  out += random.below(3) == 0 ? "null" : std::to_string(random.below(1000));
  out += ",\"history\":[";
  const std::size_t events = random.below(3);
  for (std::size_t i = 0; i < events; ++i) {
    if (i) out += ',';
    out += "{\"at\":";
    out += std::to_string(1700000000 + random.below(100000000));
    out += ",\"kind\":\"";
    out += random.below(2) ? "login" : "purchase";
    out += "\",\"amount\":";
    append_number(out, static_cast<double>(random.below(100000)) / 100.0);
    out += "}";
  }
  out += "]}";
}

}  // namespace

std::string generate_json(std::size_t approx_bytes, std::uint64_t seed) {
  Random random(seed);
  std::string out;
  out.reserve(approx_bytes + 1024);
  out += '[';
  std::uint64_t id = 0;
  do {
    if (id) out += ",\n";
    append_record(out, ++id, random);
  } while (out.size() < approx_bytes);
  out += "]\n";
  return out;
}

}  // namespace cancellable
