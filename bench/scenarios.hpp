// The benchmark scenarios of cancellable, shared by bench/cancellable-bench
// and the `cancellable bench` command (which leaves out the HTTP ones: they
// measure against libcurl, which only cancellable-bench links).
//
// Every scenario produces rows of samples in microseconds. A row that has a
// goal says so; a row measured against a baseline from the same run carries
// the baseline's name and the ratios of the two p50s and of the two p99s
// (machines here are noisy, so ratios are compared, not absolute numbers).
// Wake-up goals are p99 <= 1.25x the p99 of a std::promise wake-up measured
// in the same run, interleaved with the samples, under the same load.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace cancellable::bench {

struct Settings {
  bool quick = false;  // fewer samples: the whole run takes about 45 s on 2 cores
};

struct Goal {
  std::string text;  // e.g. "p99 <= 100 us"
  bool met = false;
};

struct Row {
  std::string bench;
  std::string backend;
  std::vector<double> samples_us;
  std::optional<Goal> goal;
  std::string baseline;  // backend name of the baseline row, or empty
  std::optional<double> ratio_p50;
  std::optional<double> ratio_p99;
};

struct Summary {
  std::size_t samples = 0;
  double p50 = 0;
  double p99 = 0;
  double max = 0;
};

// Nearest-rank percentiles of the samples.
Summary summarize(std::vector<double> samples_us);

struct Scenario {
  std::string name;
  std::vector<Row> (*run)(const Settings&);
};

// The isolate scenarios (bench/isolate_scenarios.cpp).
std::vector<Row> cancel_to_exception(const Settings&);
// Also yields its baseline row, raw_kill_reap, measured interleaved with it.
std::vector<Row> cancel_to_reaped(const Settings&);
// Also yields its baseline row, raw_fork_roundtrip, measured interleaved.
std::vector<Row> empty_roundtrip(const Settings&);
// The JSON scenarios (bench/json_scenarios.cpp).
std::vector<Row> json_parse_100mb(const Settings&);
std::vector<Row> cancel_mid_parse(const Settings&);

// The worker pool's scenarios (bench/pool_scenarios.cpp).
// raw_pingpong (a futex round trip with a forked child) and empty_roundtrip
// pool.
std::vector<Row> pool_roundtrip(const Settings&);
// cancel_to_exception pool (with its std_promise baseline) and
// slot_reuse_after_kill (against the pool's empty round trip between kills).
std::vector<Row> pool_cancel(const Settings&);
std::vector<Row> graceful_stop(const Settings&);
// empty_roundtrip for fork and pool, and spawn_worker, from a tiny parent
// and from one holding 1 GiB.
std::vector<Row> pool_big_parent(const Settings&);
std::vector<Row> slot_reuse_back_to_back(const Settings&);
// Many tasks (bench/batch_scenarios.cpp): 20,000 tiny tasks by run() and by
// map() against two workers fed by hand; one token over 1,000 pool tasks.
std::vector<Row> pool_throughput(const Settings&);
std::vector<Row> batch_cancel(const Settings&);

// Goals that compare rows of different scenarios (cancel_to_reaped against
// raw_kill_reap, empty_roundtrip against raw_fork_roundtrip), when both ran.
void apply_cross_goals(std::vector<Row>& rows);

// Every scenario, in the order they are run.
const std::vector<Scenario>& scenarios();
// Adds a scenario after the others (the HTTP scenarios, linked into
// cancellable-bench only, add themselves at start-up).
void add_scenario(Scenario scenario);

// text as a JSON string literal (quotes, backslashes and control characters
// escaped); shared with the command's parse --json.
std::string json_string(const std::string& text);

// "bench backend samples p50 p99 max ratio goal" as an aligned table.
std::string format_table(const std::vector<Row>& rows);
// One JSON object per row, one per line, with the keys bench, backend,
// samples, p50_us, p99_us, max_us (and baseline, ratio_p50, ratio_p99,
// goal, goal_met when they apply).
std::string format_json_lines(const std::vector<Row>& rows);

}  // namespace cancellable::bench
