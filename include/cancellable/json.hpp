// JSON in isolates: parse a buffer or a file with simdjson in a worker
// process, map the document to your own result type there, and get only that
// result back. A parse that is cancelled, or that takes longer than its
// timeout, dies with its worker at once; in-thread parsing cannot be stopped
// at all.
//
//   struct Summary { std::size_t users; double total; /* serialize(...) */ };
//   auto summary = cancellable::parse_json_file("big.json", [](simdjson::dom::element root) {
//     Summary s{};
//     for (auto user : root.get_array()) { ++s.users; s.total += double(user["balance"]); }
//     return s;
//   }, token);
//
// The mapping runs in the worker and receives the root element; whatever it
// returns travels back as any isolate result does (see isolate.hpp). A
// simdjson_error thrown by the mapping (a missing key, a wrong type) becomes a
// JsonParseError too.
//
// Errors (each one a failed future, never a crash of the caller):
//   JsonParseError                       malformed or truncated JSON, an empty
//                                        document, invalid UTF-8, a document
//                                        deeper than max_depth; carries
//                                        simdjson's error code and message.
//   std::filesystem::filesystem_error    a file that does not exist or cannot
//                                        be read (parse_json_file).
//   and every error of CancellableIsolate::run.
//
// ### IMPORTANT: buffer lifetime
// parse_json reads `json` in the worker. The process backend sees a
// copy-on-write snapshot taken when the call returns, but the thread backend
// reads your buffer while it runs: keep it alive until the future completes.
//
// Files are opened and mapped (or, if they cannot be mapped, read) inside
// the worker, never read by the caller first (the caller only stats them, to
// size the arena). A mapped file that is truncated during its parse kills the
// worker with SIGBUS: the future fails with WorkerCrashed.
//
// Memory: the worker parses into a warm arena, shared memory that this
// process keeps between parses (see json_document.hpp); a helper thread in
// the worker maps in the pages the last parse touched while the file is read
// (in a fresh arena it allocates a modest share of what the parse will need:
// at most 1.45 times the input size, tape, strings and structural indexes
// together).
//
// Delivery: the result arrives as soon as the worker has written it, not
// when the worker has exited (unlike CancellableIsolate::run): the kernel's
// teardown of a worker that mapped hundreds of megabytes takes milliseconds.
// The worker is reaped in the background, its process group killed then.
// To signal the commit, the worker keeps one inherited descriptor open
// besides 0, 1 and 2: descriptor 3, an eventfd (close-on-exec).
//
// Progress (Isolate::progress, IsolateOptions::on_progress) reports the stages
// "parsing" (0 of 2) and "mapping" (1 of 2).
//
// Thread-safety: both functions may be called from any thread (see
// isolate.hpp for what the mapping may do inside a forked worker).
#pragma once

#include <simdjson.h>

#include <cstddef>
#include <filesystem>
#include <memory>
#include <string_view>
#include <type_traits>
#include <utility>

#include "cancellable/cancellation_token.hpp"
#include "cancellable/detail/json_parse.hpp"
#include "cancellable/isolate.hpp"
#include "cancellable/json_errors.hpp"

namespace cancellable {

struct JsonOptions {
  // Deeper documents fail with JsonParseError (simdjson::DEPTH_ERROR).
  std::size_t max_depth = simdjson::DEFAULT_MAX_DEPTH;
};

namespace detail {

// Runs mapping(root), turning simdjson's own exceptions into JsonParseError.
template <class F>
decltype(auto) map_json(F& mapping, simdjson::dom::element root) {
  try {
    return mapping(root);
  } catch (const simdjson::simdjson_error& e) {
    throw_json_error(e.error());
  }
}

// Runs work(arena.get()) in an isolate that parses into arena (null:
// private memory). The arena stays reserved for the worker until it has
// committed its outcome, and goes back to the cache before the outcome is
// delivered. The outcome is delivered as soon as it is committed: the
// worker's exit (the kernel unmapping a few hundred megabytes of arena and
// input takes milliseconds: see raw_kill_reap_100mb in bench/) and its reap
// follow in the background.
template <class Work>
auto run_json_work(std::shared_ptr<JsonArena> arena, Work work, const CancellationToken& token,
                   IsolateOptions options) {
  auto in_worker = [work = std::move(work), memory = arena.get()]() mutable { return work(memory); };
  using R = std::decay_t<typename isolate_result_t<decltype(in_worker)>::type>;
  return spawn_isolate<R>(std::move(in_worker), token, std::move(options), std::move(arena), true).future();
}

}  // namespace detail

// Parses json in an isolate and returns mapping(root) computed there.
template <class F>
auto parse_json(std::string_view json, F mapping,
                const CancellationToken& token = CancellationToken::none(),
                IsolateOptions options = {}, JsonOptions json_options = {}) {
  return detail::run_json_work(
      detail::arena_for(json.size()),
      [json, mapping = std::move(mapping), json_options](detail::JsonArena* arena) mutable {
        const auto parsed = detail::parse_json_in_worker(json, json_options, arena,
                                                         [] { report_progress(0, 2, "parsing"); });
        report_progress(1, 2, "mapping");
        return detail::map_json(mapping, parsed.root());
      },
      token, std::move(options));
}

// Opens and parses the file at path in an isolate and returns mapping(root).
template <class F>
auto parse_json_file(std::filesystem::path path, F mapping,
                     const CancellationToken& token = CancellationToken::none(),
                     IsolateOptions options = {}, JsonOptions json_options = {}) {
  // A stat, not a read, to size the arena; the worker reports the errors.
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  return detail::run_json_work(
      ec ? nullptr : detail::arena_for(static_cast<std::size_t>(size)),
      [path = std::move(path), mapping = std::move(mapping), json_options](detail::JsonArena* arena) mutable {
        const auto parsed = detail::parse_json_file_in_worker(path, json_options, arena, false,
                                                              [] { report_progress(0, 2, "parsing"); });
        report_progress(1, 2, "mapping");
        return detail::map_json(mapping, parsed.root());
      },
      token, std::move(options));
}

}  // namespace cancellable
