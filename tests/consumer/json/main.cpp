#include <cancellable/http.hpp>
#include <cancellable/json.hpp>

#include <cstdint>
#include <iostream>

int main() {
  auto count = cancellable::parse_json(R"([{"id": 1}, {"id": 2}, {"id": 3}])", [](simdjson::dom::element root) {
    return static_cast<std::uint64_t>(simdjson::dom::array(root).size());
  });
  const auto n = count.get();
  cancellable::http::Client client;
  try {
    (void)client.get("gopher://127.0.0.1/").get();
  } catch (const cancellable::http::HttpError& e) {
    std::cout << "http consumer: " << cancellable::http::to_string(e.kind()) << "\n";
  }
  try {
    (void)cancellable::parse_json("[1, 2", [](simdjson::dom::element) { return 0; }).get();
  } catch (const cancellable::JsonParseError& e) {
    std::cout << "json consumer: " << n << " elements, then JsonParseError " << e.simdjson_error() << "\n";
    return n == 3 ? 0 : 1;
  }
  return 1;
}
