// cancellable bench: every scenario of bench/, each goal next to its result.
#include <iostream>

#include "bench/scenarios.hpp"
#include "tools/cli.hpp"

namespace cancellable::cli {

int run_bench(bool quick, bool json) {
  bench::Settings settings;
  settings.quick = quick;
  std::vector<bench::Row> rows;
  for (const auto& scenario : bench::scenarios()) {
    if (!json) std::cerr << "running " << scenario.name << "...\n";
    auto more = scenario.run(settings);
    rows.insert(rows.end(), more.begin(), more.end());
  }
  bench::apply_cross_goals(rows);
  std::cout << (json ? bench::format_json_lines(rows) : bench::format_table(rows));
  return kExitOk;
}

}  // namespace cancellable::cli
