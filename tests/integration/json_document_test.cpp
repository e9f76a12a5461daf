#include "cancellable/json_document.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "cancellable/exceptions.hpp"
#include "cancellable/json_generator.hpp"
#include "support/temp_file.hpp"
#include "support/process_support.hpp"
#include "support/test_support.hpp"
#include "worker/test_seams.hpp"

using namespace cancellable;

namespace {

process_support::SharedGate* gate = nullptr;
void wait_at_gate() { gate->wait(); }

std::string minified_in_thread(const std::string& json) {
  simdjson::dom::parser parser;
  return simdjson::to_string(parser.parse(json).value());
}

using test_support::TempFile;

}  // namespace

TEST_CASE("a document parsed in an isolate is the same DOM as an in-thread parse", "[json][document]") {
  const auto json = generate_json(1'000'000, 21);
  auto future = parse_json_document(json);
  const JsonDocument& doc = future.get();
  CHECK(doc.json_bytes() == json.size());
  CHECK(simdjson::to_string(doc.root()) == minified_in_thread(json));
}

TEST_CASE("a document parsed from a file is the same DOM as an in-thread parse", "[json][document]") {
  const auto json = generate_json(500'000, 22);
  TempFile file(json);
  auto future = parse_json_document_file(file.path());
  CHECK(simdjson::to_string(future.get().root()) == minified_in_thread(json));
}

TEST_CASE("a large document parsed again into the warm arena is the same DOM", "[json][document]") {
  const auto json = generate_json(40'000'000, 25);
  TempFile file(json);
  const std::string expected = minified_in_thread(json);
  release_json_arena();
  for (int round = 0; round < 2; ++round) {
    CHECK(simdjson::to_string(parse_json_document_file(file.path()).get().root()) == expected);
    CHECK(simdjson::to_string(parse_json_document(json).get().root()) == expected);
  }
  release_json_arena();
}

TEST_CASE("a document outlives the future it came from", "[json][document]") {
  const auto json = generate_json(100'000, 23);
  JsonDocument doc = [&] {
    auto future = parse_json_document(json);
    future.wait();
    return std::move(const_cast<JsonDocument&>(future.get()));
  }();
  CHECK(simdjson::to_string(doc.root()) == minified_in_thread(json));
}

TEST_CASE("the arena is reused once a document is gone", "[json][document]") {
  const detail::JsonLayout layout(1 << 20);
  release_json_arena();
  auto first = detail::acquire_json_arena(layout.capacity, layout.total);
  const char* address = first->data();
  auto concurrent = detail::acquire_json_arena(layout.capacity, layout.total);
  CHECK(concurrent->data() != address);  // in use: a second arena
  concurrent.reset();
  first.reset();
  auto again = detail::acquire_json_arena(layout.capacity, layout.total);
  CHECK(again->capacity() >= layout.capacity);
  CHECK(again->size() >= layout.total);
  again.reset();
  release_json_arena();
}

TEST_CASE("bad input to a document parse fails with JsonParseError or filesystem_error",
          "[json][document][errors]") {
  auto malformed = parse_json_document(R"({"a": [1, 2,, 3]})");
  REQUIRE(malformed.wait_for(test_support::kDeadline) == std::future_status::ready);
  CHECK_THROWS_AS(malformed.get(), JsonParseError);
  auto missing = parse_json_document_file("/nonexistent/none.json");
  CHECK_THROWS_AS(missing.get(), std::filesystem::filesystem_error);
}

TEST_CASE("a document parse is cancelled at once", "[json][document][cancel]") {
  const auto json = generate_json(50'000'000, 24);
  CancellationToken token;
  auto future = parse_json_document(json, token);
  token.cancel();
  CHECK(future.is_ready());
  CHECK_THROWS_AS(future.get(), CancelledException);
}

TEST_CASE("a document arrives as soon as its worker has written it, before the worker exits",
          "[json][document][commit]") {
  // The worker's exit (the kernel unmapping the arena and the input) is not
  // waited for: here the worker is held after its commit until the test lets
  // it go, and the document must arrive meanwhile.
  const auto json = generate_json(2'000'000, 25);
  process_support::SharedGate shared_gate;
  gate = &shared_gate;
  detail::set_child_exit_hook(wait_at_gate);
  auto future = parse_json_document(json);
  const bool ready = future.wait_for(test_support::kDeadline) == std::future_status::ready;
  detail::set_child_exit_hook(nullptr);
  CHECK_FALSE(shared_gate.opened_by_watchdog());
  REQUIRE(ready);
  // The document is usable while its worker still exists.
  CHECK(simdjson::to_string(future.get().root()) == minified_in_thread(json));
  shared_gate.open();
}
