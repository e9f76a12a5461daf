// cancellable: demo | parse | fetch | generate | bench.
#include <CLI/CLI.hpp>

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include "cancellable/version.hpp"
#include "tools/cli.hpp"
#include "tools/json_pointer.hpp"

int main(int argc, char** argv) {
  using namespace cancellable::cli;
  block_command_signals();  // before any thread

  CLI::App app{
      "cancellable: stop work now. Demonstrates, measures and uses cancellable isolates.\n"
      "Exit status: 0 ok, 1 the work failed, 2 bad arguments, 124 timed out, 130 interrupted "
      "(Ctrl-C), 143 terminated (SIGTERM).",
      "cancellable"};
  app.require_subcommand(1);
  app.set_version_flag("--version", version_text());

  // "process" as the library says (Backend::process); "fork", its older
  // name here, is still taken.
  std::string backend = "process";
  const auto backend_names = CLI::IsMember({"process", "fork", "thread"});
  const char* backend_help = "process (default: a forked worker; also: fork) or thread";

  auto* demo = app.add_subcommand(
      "demo", "Show a parse in a worker, a runaway loop killed at a deadline and a large parse "
              "cancelled mid-way, with measured latencies (no files needed)");
  auto* demo_backend_option = demo->add_option("--backend", backend, backend_help)->check(backend_names);
  demo->footer(
      "Without --backend, CANCELLABLE_BACKEND (thread, process or automatic) picks the backend.\n"
      "Exit status: 0 every step ran, 1 a step failed, 2 bad arguments (or a bad CANCELLABLE_BACKEND).");

  ParseArgs parse_args;
  std::string timeout_text;
  auto* parse = app.add_subcommand("parse", "Parse a JSON file (or - for standard input) in a worker "
                                            "and print a summary");
  parse->add_option("file", parse_args.file, "The JSON file; - reads standard input")->required();
  parse->add_option("--timeout", timeout_text, "Give up after this long: 500ms, 2s, 1m (exit 124)");
  auto* backend_option =
      parse->add_option("--backend", backend,
                        "process (default: a forked worker; also: fork), thread, or pool (cancellable-worker in a "
                        "one-worker pool; regular files)")
          ->check(CLI::IsMember({"process", "fork", "thread", "pool"}));
  bool pool_flag = false;
  parse->add_flag("--pool", pool_flag, "Same as --backend pool")->excludes(backend_option);
  std::string pointer_text;
  auto* pointer_option =
      parse->add_option("--pointer", pointer_text, "Print the value at this JSON pointer, e.g. /0/name");
  parse->add_flag("--json", parse_args.json, "Print one JSON object on standard output, nothing else");
  parse->footer(
      "Without --backend or --pool, CANCELLABLE_BACKEND (thread, process or automatic) picks the backend.\n"
      "Exit status: 0 parsed, 1 the parse failed (bad JSON, a file that cannot be read, --pointer not found),\n"
      "2 bad arguments, 124 --timeout passed, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).");

  FetchArgs fetch_args;
  std::string fetch_timeout_text;
  auto* fetch = app.add_subcommand(
      "fetch", "Download a URL (progress on a terminal); with --parse, parse the JSON in a worker. "
               "Ctrl-C or --timeout stops both");
  fetch->add_option("url", fetch_args.url, "http:// or https:// URL")->required();
  fetch->add_option("--timeout", fetch_timeout_text, "Give up after this long, download and parse: 500ms, 2s (exit 124)");
  fetch->add_flag("--parse", fetch_args.parse, "Parse the body as JSON in a worker and print a summary");
  fetch->add_option("-o,--output", fetch_args.output,
                    "Write the body to this file (removed if the fetch fails); default: standard output, "
                    "or nowhere with --parse");
  fetch->add_option("--ca-file", fetch_args.ca_file, "Also trust the certificates in this PEM file");
  fetch->add_option("--proxy", fetch_args.proxy,
                    "Use this proxy, http://[user:password@]host[:port] (\"\" for none); default: http_proxy, "
                    "https_proxy and no_proxy from the environment, as curl reads them");
  fetch->footer(
      "Exit status: 0 downloaded (and parsed), 1 the fetch failed (a status outside 2xx, no connection, TLS,\n"
      "bad JSON with --parse), 2 bad arguments (a bad URL or --proxy), 124 --timeout passed,\n"
      "130 interrupted (Ctrl-C), 143 terminated (SIGTERM).");

  GenerateArgs generate_args;
  std::string size_text;
  auto* generate = app.add_subcommand(
      "generate", "Write the deterministic test JSON the benchmarks and the demo use");
  generate->add_option("size", size_text, "About this many bytes: 2000000, 20MB, 1GB")->required();
  generate->add_option("--seed", generate_args.seed, "Another seed gives other data of the same shape");
  generate->add_option("-o,--output", generate_args.output, "The file to write (default: standard output)");
  generate->footer("Exit status: 0 written, 1 the file could not be written, 2 bad arguments.");

  bool quick = false;
  bool json = false;
  auto* bench = app.add_subcommand("bench", "Run every benchmark scenario and compare with its goal");
  bench->add_flag("--quick", quick, "Fewer samples: about 45 s on 2 cores (minutes on a loaded machine)");
  bench->add_flag("--json", json, "One JSON object per result line");
  bench->footer(
      "Runs every scenario of cancellable-bench but the HTTP ones (http_*, curl_*): they measure against\n"
      "libcurl, which only cancellable-bench links; run it for those.\n"
      "Exit status: 0 every scenario ran (a goal not met does not change it), 1 a scenario failed,\n"
      "2 bad arguments.");

  // A first argument that is neither an option nor a command is named (CLI11
  // would only say that a subcommand is required).
  if (argc >= 2 && argv[1][0] != '-') {
    const std::string command = argv[1];
    if (command != "demo" && command != "parse" && command != "fetch" && command != "generate" &&
        command != "bench") {
      std::cerr << "cancellable: unknown command '" << command
                << "' (commands: demo, parse, fetch, generate, bench; see --help)\n";
      return kExitUsage;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {  // --help on a sub-command, --version
      app.exit(e);
      return kExitOk;
    }
    std::cerr << "cancellable: " << e.what() << " (see --help)\n";
    return kExitUsage;
  }
  if (backend == "fork") backend = "process";
  if (pool_flag) backend = "pool";
  // Without --backend (or --pool), CANCELLABLE_BACKEND picks the backend of
  // demo and parse, as it does the library's (an explicit --backend wins).
  const bool backend_given = backend_option->count() > 0 || demo_backend_option->count() > 0 || pool_flag;
  if (!backend_given && (*demo || *parse)) {
    if (const char* value = std::getenv("CANCELLABLE_BACKEND"); value && *value) {
      const std::string v = value;
      if (v == "thread") {
        backend = "thread";
      } else if (v == "process" || v == "fork" || v == "automatic") {
        backend = "process";
      } else {
        std::cerr << "cancellable: CANCELLABLE_BACKEND must be thread, process or automatic, not '" << v
                  << "' (see --help)\n";
        return kExitUsage;
      }
    }
  }

  if (*demo) return run_demo(backend);
  if (*bench) return run_bench(quick, json);
  if (*generate) {
    const auto bytes = parse_size(size_text);
    if (!bytes) {
      std::cerr << "cancellable: generate: '" << size_text
                << "' is not a size like 2000000, 20MB or 1GB (see --help)\n";
      return kExitUsage;
    }
    generate_args.bytes = *bytes;
    return run_generate(generate_args);
  }
  // --timeout of parse and fetch: false (after saying why) if malformed.
  const auto read_timeout = [](const std::string& text, std::optional<std::chrono::nanoseconds>& out) {
    if (text.empty()) return true;
    bool too_large = false;
    out = parse_duration(text, &too_large);
    if (!out) {
      std::cerr << "cancellable: --timeout: '" << text
                << (too_large ? "' is too large (at most 31 years)" : "' is not a duration like 500ms, 2s or 1m")
                << " (see --help)\n";
    }
    return out.has_value();
  };
  if (*fetch) {
    if (!read_timeout(fetch_timeout_text, fetch_args.timeout)) return kExitUsage;
    return run_fetch(fetch_args);
  }
  if (*parse) {
    parse_args.backend = backend;
    if (!read_timeout(timeout_text, parse_args.timeout)) return kExitUsage;
    if (*pointer_option) {
      parse_args.pointer = pointer_text;
      if (!json_pointer_tokens(*parse_args.pointer)) {
        std::cerr << "cancellable: --pointer: '" << *parse_args.pointer
                  << "' is not a JSON pointer (it starts with '/', and '~' is followed by 0 or 1; see --help)\n";
        return kExitUsage;
      }
    }
    return run_parse(parse_args);
  }
  return kExitUsage;
}
