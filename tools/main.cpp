// cancellable: demo | parse | bench.
#include <CLI/CLI.hpp>

#include <iostream>
#include <string>

#include "tools/cli.hpp"

int main(int argc, char** argv) {
  using namespace cancellable::cli;
  CLI::App app{
      "cancellable: stop work now. Demonstrates, measures and uses cancellable isolates.\n"
      "Exit status: 0 ok, 1 the work failed, 2 bad arguments, 124 timed out, 130 interrupted."};
  app.require_subcommand(1);

  auto* demo = app.add_subcommand(
      "demo", "Show a parse in a worker, a runaway loop killed at a deadline and a large parse "
              "cancelled mid-way, with measured latencies (no files needed)");

  ParseArgs parse_args;
  std::string timeout_text;
  auto* parse = app.add_subcommand("parse", "Parse a JSON file in a worker and print a summary");
  parse->add_option("file", parse_args.file, "The JSON file")->required();
  parse->add_option("--timeout", timeout_text, "Give up after this long: 500ms, 2s, 1m (exit 124)");
  parse->add_option("--backend", parse_args.backend, "fork (default) or thread")
      ->check(CLI::IsMember({"fork", "thread"}));
  std::string pointer_text;
  auto* pointer_option =
      parse->add_option("--pointer", pointer_text, "Print the value at this JSON pointer, e.g. /0/name");

  bool quick = false;
  bool json = false;
  auto* bench = app.add_subcommand("bench", "Run every benchmark scenario and compare with its goal");
  bench->add_flag("--quick", quick, "Fewer samples: under 20 seconds");
  bench->add_flag("--json", json, "One JSON object per result line");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {  // --help on a sub-command
      app.exit(e);
      return kExitOk;
    }
    std::cerr << "cancellable: " << e.what() << " (see --help)\n";
    return kExitUsage;
  }

  if (*demo) return run_demo();
  if (*bench) return run_bench(quick, json);
  if (*parse) {
    if (!timeout_text.empty()) {
      parse_args.timeout = parse_duration(timeout_text);
      if (!parse_args.timeout) {
        std::cerr << "cancellable: --timeout: '" << timeout_text
                  << "' is not a duration like 500ms, 2s or 1m (see --help)\n";
        return kExitUsage;
      }
    }
    if (*pointer_option) {
      parse_args.pointer = pointer_text;
      if (!parse_args.pointer->empty() && parse_args.pointer->front() != '/') {
        std::cerr << "cancellable: --pointer: a JSON pointer starts with '/' (see --help)\n";
        return kExitUsage;
      }
    }
    return run_parse(parse_args);
  }
  return kExitUsage;
}
