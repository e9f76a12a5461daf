#include "cancellable/json.hpp"

#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "cancellable/exceptions.hpp"
#include "cancellable/json_generator.hpp"
#include "helpers/test_support.hpp"

using namespace cancellable;

namespace {

struct Totals {
  std::size_t users = 0;
  std::size_t tags = 0;
  double balance = 0;
  std::string first_city;
  template <class Archive>
  void serialize(Archive& archive) {
    archive(users, tags, balance, first_city);
  }
  friend bool operator==(const Totals&, const Totals&) = default;
};

Totals totals_of(simdjson::dom::element root) {
  Totals t;
  for (simdjson::dom::element user : root.get_array()) {
    ++t.users;
    t.tags += simdjson::dom::array(user["tags"]).size();
    t.balance += double(user["balance"]);
    if (t.first_city.empty()) t.first_city = std::string(std::string_view(user["address"]["city"]));
  }
  return t;
}

Totals totals_in_thread(const std::string& json) {
  simdjson::dom::parser parser;
  return totals_of(parser.parse(json));
}

// A file in a fresh temporary directory, removed with it.
struct TempFile {
  explicit TempFile(const std::string& contents) {
    dir = std::filesystem::temp_directory_path() /
          ("cancellable-json-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    path = dir / "data.json";
    std::ofstream(path, std::ios::binary) << contents;
  }
  ~TempFile() { std::filesystem::remove_all(dir); }
  std::filesystem::path dir;
  std::filesystem::path path;
};

int json_error_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const JsonParseError& error) {
    return error.simdjson_error();
  } catch (...) {
    return -1;
  }
}

using test_support::failure_of;

}  // namespace

TEST_CASE("the generator is deterministic and produces valid JSON of the asked size", "[json]") {
  const auto a = generate_json(100'000, 7);
  const auto b = generate_json(100'000, 7);
  CHECK(a == b);
  CHECK(a != generate_json(100'000, 8));
  CHECK(a.size() >= 100'000);
  CHECK(a.size() < 101'000);
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  REQUIRE(parser.parse(a).get(root) == simdjson::SUCCESS);
  CHECK(root.is_array());
  // Escapes and characters beyond the Basic Multilingual Plane survive.
  CHECK(a.find("\\ud83d\\ude00") != std::string::npos);
  CHECK(a.find("😀") != std::string::npos);
}

TEST_CASE("a mapping computed in an isolate equals in-thread parsing of the same bytes", "[json]") {
  const auto json = generate_json(2'000'000, 3);
  auto f = parse_json(json, totals_of);
  CHECK(f.get() == totals_in_thread(json));
  CHECK(f.get().users > 1000);
}

TEST_CASE("a file is parsed in an isolate", "[json]") {
  const auto json = generate_json(500'000, 5);
  TempFile file(json);
  CHECK(parse_json_file(file.path, totals_of).get() == totals_in_thread(json));
}

TEST_CASE("a large parse equals in-thread parsing, on small pages and on huge pages", "[json]") {
  // From 16 MiB on, JsonOptions::huge_pages advises the worker's scratch
  // memory onto huge pages.
  const auto json = generate_json(40'000'000, 13);
  const auto expected = totals_in_thread(json);
  TempFile file(json);
  for (const bool huge_pages : {false, true}) {
    const JsonOptions json_options{.huge_pages = huge_pages};
    CHECK(parse_json(json, totals_of, CancellationToken::none(), {}, json_options).get() == expected);
    CHECK(parse_json_file(file.path, totals_of, CancellationToken::none(), {}, json_options).get() ==
          expected);
  }
  IsolateOptions on_thread;
  on_thread.backend = Backend::thread;
  CHECK(parse_json_file(file.path, totals_of, CancellationToken::none(), on_thread,
                        JsonOptions{.huge_pages = true})
            .get() == expected);
}

TEST_CASE("a path that is a directory fails with std::filesystem::filesystem_error", "[json][errors]") {
  auto error = failure_of(parse_json_file(std::filesystem::temp_directory_path(), totals_of));
  REQUIRE(error);
  try {
    std::rethrow_exception(error);
  } catch (const std::filesystem::filesystem_error& e) {
    CHECK(e.path1() == std::filesystem::temp_directory_path());
  }
}

TEST_CASE("bad JSON fails with JsonParseError carrying simdjson's code and message", "[json][errors]") {
  struct Case {
    const char* name;
    std::string json;
    simdjson::error_code expected;
  };
  const Case cases[] = {
      {"malformed", R"({"a": 1,, "b": 2})", simdjson::TAPE_ERROR},
      {"truncated", R"([{"a": 1}, {"b": [1, 2)", simdjson::TAPE_ERROR},  // the DOM parser reports TAPE_ERROR
      {"empty", "", simdjson::EMPTY},
      {"invalid UTF-8", std::string("[\"\xff\xfe\"]"), simdjson::UTF8_ERROR},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    auto error = failure_of(parse_json(c.json, [](simdjson::dom::element) { return 0; }));
    CHECK(json_error_of(error) == static_cast<int>(c.expected));
    try {
      std::rethrow_exception(error);
    } catch (const JsonParseError& e) {
      CHECK(e.simdjson_message() == simdjson::error_message(c.expected));
      CHECK(std::string(e.what()).find(simdjson::error_message(c.expected)) != std::string::npos);
    } catch (...) {
    }
  }
}

TEST_CASE("a document deeper than max_depth fails with DEPTH_ERROR", "[json][errors]") {
  const std::string deep = std::string(100, '[') + std::string(100, ']');
  JsonOptions shallow;
  shallow.max_depth = 10;
  auto error = failure_of(parse_json(deep, [](simdjson::dom::element) { return 0; },
                                     CancellationToken::none(), {}, shallow));
  CHECK(json_error_of(error) == static_cast<int>(simdjson::DEPTH_ERROR));
  CHECK(parse_json(deep, [](simdjson::dom::element) { return 1; }).get() == 1);
}

TEST_CASE("a missing file fails with std::filesystem::filesystem_error naming it", "[json][errors]") {
  const std::filesystem::path missing = "/nonexistent/cancellable/none.json";
  auto error = failure_of(parse_json_file(missing, [](simdjson::dom::element) { return 0; }));
  try {
    std::rethrow_exception(error);
  } catch (const std::filesystem::filesystem_error& e) {
    CHECK(e.path1() == missing);
    CHECK(e.code() == std::errc::no_such_file_or_directory);
    CHECK(std::string(e.what()).find("cannot read JSON file") != std::string::npos);
  }
  CHECK(json_error_of(error) == -1);
}

TEST_CASE("an empty file fails with JsonParseError", "[json][errors]") {
  TempFile empty("");
  auto error = failure_of(parse_json_file(empty.path, [](simdjson::dom::element) { return 0; }));
  CHECK(json_error_of(error) == static_cast<int>(simdjson::EMPTY));
}

TEST_CASE("a mapping that asks for a missing key fails with JsonParseError", "[json][errors]") {
  auto error = failure_of(parse_json(R"({"a": 1})", [](simdjson::dom::element root) {
    return int64_t(root["missing"]);
  }));
  CHECK(json_error_of(error) == static_cast<int>(simdjson::NO_SUCH_FIELD));
}

TEST_CASE("a parse can be cancelled mid-way", "[json][cancel]") {
  const auto json = generate_json(20'000'000, 11);
  CancellationToken token;
  auto started = std::make_shared<test_support::Event>();
  IsolateOptions options;
  options.progress_interval = std::chrono::milliseconds(1);
  options.on_progress = [started](const Progress&) { started->set(); };
  auto isolate = CancellableIsolate::spawn(
      [&json] {
        cancellable::report_progress(0, 1, "parsing");
        simdjson::dom::parser parser;
        std::size_t users = 0;
        for (;;) {  // parse again and again: far longer than the test waits
          for (auto user : parser.parse(json).get_array()) users += user.is_object();
        }
        return users;
      },
      token, options);
  REQUIRE(started->wait());
  token.cancel();
  CHECK(isolate.future().is_ready());
  CHECK_THROWS_AS(isolate.future().get(), CancelledException);
  REQUIRE(isolate.exited().wait_for(test_support::kDeadline) == std::future_status::ready);
  CHECK(isolate.exited().get().signal == SIGKILL);
}
