#include "bench/scenarios.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <future>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>

#include "bench/measure.hpp"
#include "cancellable/cancellable.hpp"

namespace cancellable::bench {

namespace {

// --- timeout_lateness ---------------------------------------------------------

// Records when its token cancelled it.
class Stamp final : public Cancellable {
 public:
  ~Stamp() override { detach(); }
  Clock::time_point wait() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return fired_; });
    return at_;
  }

 private:
  void on_cancel(std::exception_ptr) override {
    const auto now = Clock::now();
    std::lock_guard lock(mutex_);
    at_ = now;
    fired_ = true;
    cv_.notify_all();
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  bool fired_ = false;
  Clock::time_point at_;
};

constexpr std::chrono::milliseconds kTimeouts[] = {1ms, 2ms, 5ms, 10ms, 20ms, 50ms};

std::vector<Row> timeout_lateness(const Settings& settings) {
  const std::size_t samples = settings.quick ? 60 : 600;
  std::vector<double> token_late;
  std::vector<double> sleep_late;
  {
    // Warm-up: the first token starts the timer thread.
    Stamp stamp;
    TimeoutCancellationToken token(1ms);
    stamp.maybe_attach(token);
    stamp.wait();
  }
  for (std::size_t i = 0; i < samples; ++i) {
    const auto timeout = kTimeouts[i % std::size(kTimeouts)];
    {
      Stamp stamp;
      const auto start = Clock::now();
      TimeoutCancellationToken token(timeout);
      stamp.maybe_attach(token);
      token_late.push_back(us_between(start + timeout, stamp.wait()));
    }
    {
      const auto deadline = Clock::now() + timeout;
      std::this_thread::sleep_until(deadline);
      sleep_late.push_back(us_between(deadline, Clock::now()));
    }
  }
  auto baseline = make_row("timeout_lateness", "sleep_until", std::move(sleep_late));
  auto token = make_row("timeout_lateness", "token", std::move(token_late));
  compare(token, baseline);
  set_p99_goal(token, 1000);
  return {std::move(baseline), std::move(token)};
}

// --- cancel_notify ------------------------------------------------------------


// --- when_all -------------------------------------------------------------------

std::vector<Row> when_all_ready(const Settings& settings) {
  constexpr int kFutures = 1000;
  const std::size_t samples = settings.quick ? 500 : 5000;
  std::vector<Future<int>> futures;
  for (int i = 0; i < kFutures; ++i) futures.push_back(make_ready_future(i));
  std::vector<double> loop_us, when_all_us;
  for (std::size_t s = 0; s < samples; ++s) {
    {
      const auto start = Clock::now();
      std::vector<int> values;
      values.reserve(futures.size());
      for (const auto& f : futures) values.push_back(f.get());
      sink.fetch_add(static_cast<std::uint64_t>(values.back()), std::memory_order_relaxed);
      loop_us.push_back(us_between(start, Clock::now()));
    }
    {
      const auto start = Clock::now();
      const auto all = when_all(futures);
      sink.fetch_add(static_cast<std::uint64_t>(all.get().back()), std::memory_order_relaxed);
      when_all_us.push_back(us_between(start, Clock::now()));
    }
  }
  auto baseline = make_row("when_all", "loop_of_get_1000", std::move(loop_us));
  auto row = make_row("when_all", "when_all_1000", std::move(when_all_us));
  compare(row, baseline);
  row.goal = Goal{"p50 <= 2x loop_of_get_1000 p50", *row.ratio_p50 <= 2.0};
  return {std::move(baseline), std::move(row)};
}

// The floor: the same number of virtual calls, with no token around them.
struct RawCallback {
  virtual ~RawCallback() = default;
  virtual void fire() { sink.fetch_add(1, std::memory_order_relaxed); }
};

std::vector<Row> cancel_notify(const Settings& settings) {
  std::vector<Row> rows;
  for (const std::size_t attached : {std::size_t{1}, std::size_t{1000}}) {
    const std::size_t samples =
        attached == 1 ? (settings.quick ? 5000 : 50000) : (settings.quick ? 500 : 5000);
    std::vector<std::unique_ptr<Noop>> cancellables;
    std::vector<std::unique_ptr<RawCallback>> raw;
    for (std::size_t i = 0; i < attached; ++i) {
      cancellables.push_back(std::make_unique<Noop>());
      raw.push_back(std::make_unique<RawCallback>());
    }
    std::vector<double> token_us;
    std::vector<double> raw_us;
    for (std::size_t s = 0; s < samples; ++s) {
      CancellationToken token;
      for (auto& c : cancellables) c->maybe_attach(token);
      const auto start = Clock::now();
      token.cancel();
      token_us.push_back(us_between(start, Clock::now()));

      const auto raw_start = Clock::now();
      for (auto& r : raw) r->fire();
      raw_us.push_back(us_between(raw_start, Clock::now()));
    }
    std::string suffix = "_";
    suffix += std::to_string(attached);
    auto baseline = make_row("cancel_notify", "raw_calls" + suffix, std::move(raw_us));
    auto token = make_row("cancel_notify", "token" + suffix, std::move(token_us));
    compare(token, baseline);
    rows.push_back(std::move(baseline));
    rows.push_back(std::move(token));
  }
  return rows;
}

// --- cancel_to_waiter ---------------------------------------------------------

std::vector<Row> cancel_to_waiter(const Settings& settings) {
  const std::size_t samples = settings.quick ? 500 : 5000;
  constexpr std::size_t kWarmup = 20;
  Waiter waiter;
  std::vector<double> token_us;
  std::vector<double> promise_us;
  for (std::size_t i = 0; i < samples + kWarmup; ++i) {
    {
      CancellationToken token;
      CancellableCompleter<int> completer(token);
      auto future = completer.future();
      const double us = wakeup_of(waiter, future, [&] { token.cancel(); });
      if (i >= kWarmup) token_us.push_back(us);
    }
    const double promise = promise_wakeup(waiter);
    if (i >= kWarmup) promise_us.push_back(promise);
  }
  auto baseline = make_row("cancel_to_waiter", "std_promise", std::move(promise_us));
  auto token = make_row("cancel_to_waiter", "token", std::move(token_us));
  set_p99_ratio_goal(token, baseline, 1.25);
  return {std::move(baseline), std::move(token)};
}

std::string fixed(double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.3f", value);
  return buffer;
}


}  // namespace

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", u);
      out += escaped;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

Summary summarize(std::vector<double> samples) {
  Summary s;
  s.samples = samples.size();
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  auto rank = [&](double p) {
    const auto index = static_cast<std::size_t>(std::ceil(p * static_cast<double>(samples.size())));
    return samples[std::min(samples.size() - 1, index == 0 ? 0 : index - 1)];
  };
  s.p50 = rank(0.50);
  s.p99 = rank(0.99);
  s.max = samples.back();
  return s;
}

void apply_cross_goals(std::vector<Row>& rows) {
  auto find = [&](const std::string& bench, const std::string& backend) -> const Row* {
    for (const auto& row : rows) {
      if (row.bench == bench && row.backend == backend) return &row;
    }
    return nullptr;
  };
  const Row* raw_kill = find("raw_kill_reap", "raw");
  const Row* raw_fork = find("raw_fork_roundtrip", "raw");
  for (auto& row : rows) {
    // (The isolate rows only: the pool's rows have baselines of their own.)
    const bool isolate_row = row.backend == "fork" || row.backend == "thread";
    if (row.bench == "cancel_to_reaped" && raw_kill && isolate_row) {
      compare(row, *raw_kill);
      if (row.backend == "fork") {
        const double limit = 1.5 * summarize(raw_kill->samples_us).p99;
        std::ostringstream text;
        text << "p99 <= 1.5x raw_kill_reap p99 (" << fixed(limit) << " us)";
        row.goal = Goal{text.str(), summarize(row.samples_us).p99 <= limit};
      }
    }
    if (row.bench == "empty_roundtrip" && raw_fork && isolate_row) {
      compare(row, *raw_fork);
      if (row.backend == "fork") {
        row.goal = Goal{"p50 <= 1.5x raw_fork_roundtrip p50", *row.ratio_p50 <= 1.5};
      }
    }
  }
}

namespace {
std::vector<Scenario>& all_scenarios() {
  static std::vector<Scenario> all = {
      {"timeout_lateness", timeout_lateness},
      {"cancel_notify", cancel_notify},
      {"cancel_to_waiter", cancel_to_waiter},
      {"when_all", when_all_ready},
      {"cancel_to_exception", cancel_to_exception},
      {"cancel_to_reaped", cancel_to_reaped},
      {"empty_roundtrip", empty_roundtrip},
      {"json_parse_100mb", json_parse_100mb},
      {"cancel_mid_parse", cancel_mid_parse},
      {"pool_roundtrip", pool_roundtrip},
      {"pool_cancel", pool_cancel},
      {"graceful_stop", graceful_stop},
      {"pool_big_parent", pool_big_parent},
      {"slot_reuse_back_to_back", slot_reuse_back_to_back},
      {"pool_throughput", pool_throughput},
      {"batch_cancel", batch_cancel},
  };
  return all;
}
}  // namespace

const std::vector<Scenario>& scenarios() { return all_scenarios(); }

void add_scenario(Scenario scenario) { all_scenarios().push_back(std::move(scenario)); }

// A time in the unit that suits it: "71.2 us", "12.5 ms", "1.27 s".
std::string with_unit(double us) {
  char text[32];
  if (us < 1000) {
    std::snprintf(text, sizeof text, "%.1f us", us);
  } else if (us < 1e6) {
    std::snprintf(text, sizeof text, "%.1f ms", us / 1000);
  } else {
    std::snprintf(text, sizeof text, "%.2f s", us / 1e6);
  }
  return text;
}

std::string format_table(const std::vector<Row>& rows) {
  // Columns as wide as their longest cell; a p99 only where there are 100
  // samples or more (below that the nearest-rank p99 is the maximum).
  std::vector<std::vector<std::string>> cells;
  cells.push_back({"bench", "backend", "samples", "p50", "p99", "max", "ratio_p50", "ratio_p99", "baseline", "goal"});
  for (const auto& row : rows) {
    const auto s = summarize(row.samples_us);
    std::string goal;
    if (row.goal) goal = row.goal->text + (row.goal->met ? ": met" : ": NOT met");
    cells.push_back({row.bench, row.backend, std::to_string(s.samples), with_unit(s.p50),
                     s.samples >= 100 ? with_unit(s.p99) : "-", with_unit(s.max),
                     row.ratio_p50 ? fixed(*row.ratio_p50).substr(0, fixed(*row.ratio_p50).size() - 1) + "x" : "",
                     row.ratio_p99 && s.samples >= 100
                         ? fixed(*row.ratio_p99).substr(0, fixed(*row.ratio_p99).size() - 1) + "x"
                         : "",
                     row.baseline, goal});
  }
  std::vector<std::size_t> width(cells.front().size(), 0);
  for (const auto& line : cells) {
    for (std::size_t c = 0; c < line.size(); ++c) width[c] = std::max(width[c], line[c].size());
  }
  std::ostringstream out;
  for (const auto& line : cells) {
    std::string text;
    for (std::size_t c = 0; c < line.size(); ++c) {
      const bool numeric = c >= 2 && c <= 7;  // right-aligned
      const std::string pad(width[c] - line[c].size(), ' ');
      text += numeric ? pad + line[c] : line[c] + (c + 1 < line.size() ? pad : "");
      if (c + 1 < line.size()) text += "  ";
    }
    while (!text.empty() && text.back() == ' ') text.pop_back();
    out << text << "\n";
  }
  out << "(p99: - with fewer than 100 samples, where it would be the max)\n";
  return out.str();
}

std::string format_json_lines(const std::vector<Row>& rows) {
  std::ostringstream out;
  for (const auto& row : rows) {
    const auto s = summarize(row.samples_us);
    out << "{\"bench\": " << json_string(row.bench) << ", \"backend\": " << json_string(row.backend)
        << ", \"samples\": " << s.samples << ", \"p50_us\": " << fixed(s.p50)
        << ", \"p99_us\": " << fixed(s.p99) << ", \"max_us\": " << fixed(s.max);
    if (!row.baseline.empty()) out << ", \"baseline\": " << json_string(row.baseline);
    if (row.ratio_p50) out << ", \"ratio_p50\": " << fixed(*row.ratio_p50);
    if (row.ratio_p99) out << ", \"ratio_p99\": " << fixed(*row.ratio_p99);
    if (row.goal) {
      out << ", \"goal\": " << json_string(row.goal->text)
          << ", \"goal_met\": " << (row.goal->met ? "true" : "false");
    }
    out << "}\n";
  }
  return out.str();
}

}  // namespace cancellable::bench
