// cancellable bench: every scenario of bench/, each goal next to its result.
#include <exception>
#include <iostream>

#include "bench/scenarios.hpp"
#include "tools/cli.hpp"

namespace cancellable::cli {

int run_bench(bool quick, bool json) {
  bench::Settings settings;
  settings.quick = quick;
  std::vector<bench::Row> rows;
  // (The HTTP scenarios measure against libcurl, which only cancellable-bench links.)
  std::cerr << "cancellable bench: every scenario but the HTTP ones (http_*, curl_*: they measure against "
               "libcurl, which only cancellable-bench links; run it for those)\n";
  for (const auto& scenario : bench::scenarios()) {
    if (!json) std::cerr << "running " << scenario.name << "...\n";
    try {
      auto more = scenario.run(settings);
      rows.insert(rows.end(), more.begin(), more.end());
    } catch (const std::exception& e) {
      std::cerr << "cancellable bench: " << scenario.name << " failed: " << e.what() << "\n";
      return kExitError;
    }
  }
  bench::apply_cross_goals(rows);
  std::cout << (json ? bench::format_json_lines(rows) : bench::format_table(rows));
  return kExitOk;
}

}  // namespace cancellable::cli
