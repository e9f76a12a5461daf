// Arguments, units and job control of the `cancellable` command.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "tools/cli.hpp"

namespace cancellable::cli {

namespace {

// digits [. digits], then the rest: the number and where the unit starts.
std::optional<std::pair<double, std::size_t>> leading_number(const std::string& text) {
  std::size_t i = 0;
  auto digits = [&] {
    const std::size_t start = i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
    return i > start;
  };
  if (!digits()) return std::nullopt;
  if (i < text.size() && text[i] == '.') {
    ++i;
    if (!digits()) return std::nullopt;
  }
  return std::make_pair(std::strtod(text.substr(0, i).c_str(), nullptr), i);
}

// This process's children that lead a process group of their own in its
// session: its isolate workers (the keeper leads a session of its own). A
// child, reaped or not, keeps its group id from being reused while listed.
std::vector<pid_t> worker_groups() {
  std::vector<pid_t> groups;
  const pid_t session = ::getsid(0);
  std::error_code ignored;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task", ignored)) {
    std::ifstream children(task.path() / "children");
    for (pid_t child = 0; children >> child;) {
      std::ifstream stat("/proc/" + std::to_string(child) + "/stat");
      std::string line;
      if (!std::getline(stat, line)) continue;
      const auto close = line.rfind(')');
      char state = 0;
      long ppid = 0, pgrp = 0, sid = 0;
      if (close != std::string::npos &&
          std::sscanf(line.c_str() + close + 1, " %c %ld %ld %ld", &state, &ppid, &pgrp, &sid) == 4 &&
          pgrp == child && sid == session) {
        groups.push_back(child);
      }
    }
  }
  return groups;
}

}  // namespace

std::optional<std::chrono::nanoseconds> parse_duration(const std::string& text, bool* too_large) {
  if (too_large) *too_large = false;
  const auto number = leading_number(text);
  if (!number) return std::nullopt;
  const std::string unit = text.substr(number->second);
  double scale = 0;
  if (unit == "ns") scale = 1;
  else if (unit == "us") scale = 1e3;
  else if (unit == "ms") scale = 1e6;
  else if (unit == "s") scale = 1e9;
  else if (unit == "m") scale = 60e9;
  else return std::nullopt;
  const double ns = number->first * scale;
  if (!std::isfinite(ns) || ns > static_cast<double>(kMaxTimeout.count())) {
    if (too_large) *too_large = true;
    return std::nullopt;
  }
  return std::chrono::nanoseconds(static_cast<std::int64_t>(ns));
}

std::optional<std::uint64_t> parse_size(const std::string& text) {
  const auto number = leading_number(text);
  if (!number) return std::nullopt;
  const std::string unit = text.substr(number->second);
  double scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "kB" || unit == "KB" || unit == "k") scale = 1e3;
  else if (unit == "MB" || unit == "M") scale = 1e6;
  else if (unit == "GB" || unit == "G") scale = 1e9;
  else return std::nullopt;
  const double bytes = number->first * scale;
  if (!std::isfinite(bytes) || bytes > 1e15) return std::nullopt;  // a petabyte of JSON is a typo
  return static_cast<std::uint64_t>(bytes);
}

std::string format_size(std::uint64_t bytes) {
  char text[96];
  if (bytes >= 1'000'000'000) {
    std::snprintf(text, sizeof text, "%.2f GB (%llu bytes)", static_cast<double>(bytes) / 1e9,
                  static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(text, sizeof text, "%.1f MB (%llu bytes)", static_cast<double>(bytes) / 1e6,
                  static_cast<unsigned long long>(bytes));
  }
  return text;
}

std::string format_ms(double ms) {
  char text[64];
  std::snprintf(text, sizeof text, "%.1f ms", ms);
  return text;
}

std::string short_size(double bytes) {
  char text[32];
  if (bytes < 1e6) {
    std::snprintf(text, sizeof text, "%.1f kB", bytes / 1e3);
  } else if (bytes >= 1e9) {
    std::snprintf(text, sizeof text, "%.2f GB", bytes / 1e9);
  } else {
    std::snprintf(text, sizeof text, "%.1f MB", bytes / 1e6);
  }
  return text;
}

void leave_now(int status) {
  std::fflush(stdout);
  std::fflush(stderr);
  ::_exit(status);
}

// SIGTSTP and SIGCONT, taken by the job control thread with sigwait. (A
// blocked SIGCONT still continues the process; blocking it only lets the
// thread see it.)
sigset_t job_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTSTP);
  sigaddset(&set, SIGCONT);
  return set;
}

void block_command_signals() {
  const sigset_t set = job_signals();
  ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void start_job_control() {
  std::thread([] {
    const sigset_t set = job_signals();
    for (;;) {
      int sig = 0;
      if (::sigwait(&set, &sig) != 0) continue;
      // The workers have process groups of their own: the terminal's SIGTSTP
      // does not reach them, nor the shell's SIGCONT (fg, bg). Pass both on.
      for (const pid_t group : worker_groups()) ::kill(-group, sig == SIGTSTP ? SIGSTOP : SIGCONT);
      if (sig == SIGTSTP) ::kill(::getpid(), SIGSTOP);
    }
  }).detach();
}

}  // namespace cancellable::cli
