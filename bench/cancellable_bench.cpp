// cancellable-bench: runs the benchmark scenarios and prints p50/p99/max per
// row, each baseline measured in the same run.
//
//   cancellable-bench [--quick] [--json] [--only NAME]... [--list]
#include <cstdio>
#include <cstring>
#include <iostream>
#include <set>
#include <string>
#include <thread>

#include "bench/scenarios.hpp"

namespace {

void usage(std::FILE* to) {
  std::fprintf(to,
               "usage: cancellable-bench [--quick] [--json] [--only NAME]... [--list]\n"
               "  --quick      fewer samples: about 45 s on 2 cores (minutes on a loaded machine)\n"
               "  --json       one JSON object per row and line instead of a table\n"
               "  --only NAME  run only this scenario (repeatable; see --list)\n"
               "  --list       print the scenario names and exit\n");
}

}  // namespace

namespace cancellable::bench {
int pool_construct_child(bool ballast);  // (pool_construct.cpp)
}

int main(int argc, char** argv) {
  using namespace cancellable::bench;
  if (argc >= 2 && std::strcmp(argv[1], "--pool-construct-child") == 0) {
    return pool_construct_child(argc == 3 && std::strcmp(argv[2], "--ballast") == 0);
  }
  Settings settings;
  bool json = false;
  std::set<std::string> only;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      settings.quick = true;
    } else if (arg == "--json") {
      json = true;
    } else if (arg == "--only" && i + 1 < argc) {
      only.insert(argv[++i]);
    } else if (arg == "--list") {
      for (const auto& s : scenarios()) std::cout << s.name << "\n";
      return 0;
    } else if (arg == "--help" || arg == "-h") {
      usage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "cancellable-bench: unknown argument '%s' (try --help)\n", arg.c_str());
      return 2;
    }
  }
  for (const auto& name : only) {
    bool known = false;
    for (const auto& s : scenarios()) known = known || s.name == name;
    if (!known) {
      std::fprintf(stderr, "cancellable-bench: unknown scenario '%s' (try --list)\n", name.c_str());
      return 2;
    }
  }

  if (!json) {
    std::cout << "cancellable-bench" << (settings.quick ? " --quick" : "") << ": "
              << std::thread::hardware_concurrency() << " hardware threads\n\n";
  }
  std::vector<Row> all;
  for (const auto& scenario : scenarios()) {
    if (!only.empty() && !only.count(scenario.name)) continue;
    if (!json) std::cerr << "running " << scenario.name << "...\n";
    auto rows = scenario.run(settings);
    all.insert(all.end(), rows.begin(), rows.end());
  }
  apply_cross_goals(all);
  std::cout << (json ? format_json_lines(all) : format_table(all));
  return 0;
}
