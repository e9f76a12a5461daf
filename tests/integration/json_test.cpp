#include "cancellable/json.hpp"

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "cancellable/exceptions.hpp"
#include "cancellable/json_document.hpp"
#include "cancellable/json_generator.hpp"
#include "support/temp_file.hpp"
#include "support/process_support.hpp"
#include "worker/json/arena_use.hpp"
#include "support/test_support.hpp"

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

using test_support::TempFile;

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
  CHECK(parse_json_file(file.path(), totals_of).get() == totals_in_thread(json));
}

TEST_CASE("large parses equal in-thread parsing, in a fresh arena and again in the warm one", "[json]") {
  // The second parse of each size maps in, ahead of the parser, the pages
  // that the first one used (scaled to its input); a larger input than the
  // arena last saw, and a smaller one, must parse the same.
  release_json_arena();
  for (const std::size_t bytes : {20'000'000, 40'000'000, 5'000'000}) {
    const auto json = generate_json(bytes, 13);
    const auto expected = totals_in_thread(json);
    TempFile file(json);
    for (int round = 0; round < 2; ++round) {
      CHECK(parse_json(json, totals_of).get() == expected);
      CHECK(parse_json_file(file.path(), totals_of).get() == expected);
    }
    IsolateOptions on_thread;
    on_thread.backend = Backend::thread;
    CHECK(parse_json_file(file.path(), totals_of, CancellationToken::none(), on_thread).get() == expected);
  }
  release_json_arena();
}

TEST_CASE("the arena is free again when the result arrives", "[json][arena]") {
  // The worker's arena goes back to the cache once the worker has committed
  // its outcome, before the outcome is delivered: the next parse finds it
  // warm. Its first page records the parse (JsonArenaUse).
  const auto json = generate_json(3'000'000, 31);
  TempFile file(json);
  const detail::JsonLayout layout(json.size());
  release_json_arena();
  auto expect_arena_free_with_record_of = [&](std::size_t bytes) {
    auto arena = detail::acquire_json_arena(layout.capacity, layout.total);
    CHECK(reinterpret_cast<const detail::JsonArenaUse*>(arena->data())->json_bytes == bytes);
  };
  SECTION("to a thread waiting in get()") {
    CHECK(parse_json_file(file.path(), totals_of).get() == totals_in_thread(json));
    expect_arena_free_with_record_of(json.size());
  }
  SECTION("to a continuation") {
    auto users = parse_json(json, totals_of).then([](const Totals& t) { return t.users; });
    CHECK(users.get() == totals_in_thread(json).users);
    expect_arena_free_with_record_of(json.size());
  }
  SECTION("a cancelled parse gives it back once its worker is reaped") {
    CancellationToken token;
    auto future = parse_json_file(file.path(), totals_of, token);
    token.cancel();
    REQUIRE(future.is_ready());  // cancelled, or (rarely) done already

    // The worker dies on its own time; exited() is not at hand here, so
    // parse again: that parse must not share the arena with a dying worker.
    CHECK(parse_json_file(file.path(), totals_of).get() == totals_in_thread(json));
  }
  release_json_arena();
}

TEST_CASE("a file that does not fit the arena is parsed in private memory", "[json][arena]") {
  // As when a file grows between the caller's stat and the worker's open.
  const auto json = generate_json(1'000'000, 33);
  TempFile file(json);
  auto small = detail::acquire_json_arena(detail::JsonLayout(1000).capacity, detail::JsonLayout(1000).total);
  const JsonOptions options;
  CHECK(totals_of(detail::parse_json_file_in_worker(file.path(), options, small.get(), false, {}).root()) ==
        totals_in_thread(json));
  // A document must be in the arena: that is an error.
  CHECK_THROWS_WITH(detail::parse_json_file_in_worker(file.path(), options, small.get(), true, {}),
                    Catch::Contains("grew"));
}

TEST_CASE("a named pipe is read to its end and parsed", "[json]") {
  // Not a regular file: the worker cannot map it and reads it instead.
  const auto json = generate_json(300'000, 34);
  const auto dir = std::filesystem::temp_directory_path() / ("cancellable-fifo-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto fifo = dir / "data.json";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  auto future = parse_json_file(fifo, totals_of);
  {
    // Opening for writing waits for the worker to open it for reading.
    std::ofstream writer(fifo, std::ios::binary);
    writer << json;
  }
  CHECK(future.get() == totals_in_thread(json));
  std::filesystem::remove_all(dir);
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
  auto error = failure_of(parse_json_file(empty.path(), [](simdjson::dom::element) { return 0; }));
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

TEST_CASE("200 parses, half of them cancelled, leave no fds and keep the idle arenas", "[json][arena][leaks]") {
  const auto json = generate_json(1'000'000, 35);
  TempFile file(json);
  const auto expected = totals_in_thread(json);
  release_json_arena();
  // The idle arenas exist now (two, as when a document's arena comes back
  // late).
  auto first = parse_json_document_file(file.path());
  CHECK(parse_json_file(file.path(), totals_of).get() == expected);
  first = Future<JsonDocument>();
  const int fds = process_support::count_fds();
  const int mappings = process_support::count_mappings();
  int cancelled = 0;
  for (int i = 0; i < 200; ++i) {
    CancellationToken token;
    const bool document = i % 4 >= 2;
    auto summary = document ? Future<Totals>() : parse_json_file(file.path(), totals_of, token);
    auto whole = document ? parse_json_document_file(file.path(), token) : Future<JsonDocument>();
    if (i % 2 == 1) token.cancel();  // at once: it may still lose to a quick parse
    try {
      // Outside CHECK, which would catch the exception itself.
      if (document) {
        const std::size_t bytes = whole.get().json_bytes();
        CHECK(bytes == json.size());
      } else {
        const Totals totals = summary.get();
        CHECK(totals == expected);
      }
    } catch (const CancelledException&) {
      CHECK(i % 2 == 1);
      ++cancelled;
    }
  }
  CHECK(cancelled > 50);  // most cancellations win
  // Cancelled workers are reaped in the background: once the last is, no
  // descriptor or mapping of any run is left. (A leak would add one per run.
  // Waited for, not assumed: on a loaded machine ten reaps were still in
  // flight when this was a fixed allowance.)
  CHECK(process_support::eventually([&] { return process_support::count_fds() <= fds; }));
  // (Mappings: some growth of the allocator's own is allowed.)
  CHECK(process_support::eventually([&] { return process_support::count_mappings() <= mappings + 16; }));
  release_json_arena();
}
