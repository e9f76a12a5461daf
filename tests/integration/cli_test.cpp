// The cancellable command under signals and on a terminal: Ctrl-C (SIGINT)
// during a parse kills the worker at once and exits with status 130; a large
// parse shows a progress line on a terminal and clears it.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <vector>
#include <string>
#include <thread>
#include <utility>

#include "cancellable/json_generator.hpp"
#include "support/http_test_server.hpp"
#include "support/raw_http_server.hpp"
#include "support/process_support.hpp"

extern char** environ;

namespace {

pid_t spawn(std::vector<std::string> args, const posix_spawn_file_actions_t* actions = nullptr) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  REQUIRE(::posix_spawn(&pid, argv[0], actions, nullptr, argv.data(), environ) == 0);
  return pid;
}

// Spawns args with stdout into out_path.
pid_t spawn_with_output(std::vector<std::string> args, const std::filesystem::path& out_path) {
  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  const pid_t pid = spawn(std::move(args), &actions);
  ::posix_spawn_file_actions_destroy(&actions);
  return pid;
}

int exit_status(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Runs args with stderr on a new pseudo-terminal and stdout into out_path;
// returns what the terminal received and the exit status.
std::pair<std::string, int> run_on_terminal(std::vector<std::string> args, const std::filesystem::path& out_path) {
  const int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  REQUIRE(master >= 0);
  REQUIRE(::grantpt(master) == 0);
  REQUIRE(::unlockpt(master) == 0);
  const int terminal = ::open(::ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
  REQUIRE(terminal >= 0);
  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawn_file_actions_adddup2(&actions, terminal, STDERR_FILENO);
  ::posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  const pid_t pid = spawn(std::move(args), &actions);
  ::posix_spawn_file_actions_destroy(&actions);
  ::close(terminal);  // the child holds the only other end: reads end (EIO) when it exits
  std::string received;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(master, buffer, sizeof buffer);
    if (n > 0) {
      received.append(buffer, static_cast<std::size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;
    }
  }
  ::close(master);
  return {received, exit_status(pid)};
}

// The isolate worker of pid, once it has one: the child that leads its own
// process group in pid's session (the keeper's short-lived first child
// leads a session of its own).
pid_t wait_for_child_of(pid_t pid, std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    // (Each thread has its own list: a pool's workers are its spawner's.)
    std::error_code gone;
    for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", gone)) {
      std::ifstream children(task.path() / "children");
      for (pid_t child = 0; children >> child;) {
        const auto stat = process_support::proc_stat(child);
        if (stat && stat->pgrp == child && stat->session != child) return child;
      }
    }
    std::this_thread::yield();
  }
  return 0;
}

// A generated JSON file of about `bytes` bytes and a file for the command's
// stdout, in the temporary directory; both removed however the test ends.
struct Sample {
  Sample(const std::string& name, const char* bytes) {
    const auto base = std::filesystem::temp_directory_path() /
                      ("cancellable-cli-" + name + "-" + std::to_string(::getpid()));
    json = base.string() + ".json";
    out = base.string() + ".out";
    REQUIRE(exit_status(spawn({CANCELLABLE_GENERATE_JSON, bytes, json.string()})) == 0);
  }
  ~Sample() {
    std::error_code ignored;
    std::filesystem::remove(json, ignored);
    std::filesystem::remove(out, ignored);
  }
  Sample(const Sample&) = delete;
  Sample& operator=(const Sample&) = delete;

  std::string output() const {
    std::ifstream file(out);
    return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
  }

  std::filesystem::path json;
  std::filesystem::path out;
};

// A FIFO in the temporary directory, removed however the test ends.
struct Fifo {
  explicit Fifo(const std::string& name)
      : path(std::filesystem::temp_directory_path() /
             ("cancellable-cli-" + name + "-" + std::to_string(::getpid()) + ".fifo")) {
    std::filesystem::remove(path);
    REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
  }
  ~Fifo() {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
  }
  std::filesystem::path path;
};

// A pseudo-terminal whose other end a spawned command gets as stderr.
struct Terminal {
  Terminal() {
    master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    REQUIRE(master >= 0);
    REQUIRE(::grantpt(master) == 0);
    REQUIRE(::unlockpt(master) == 0);
    terminal = ::open(::ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
    REQUIRE(terminal >= 0);
  }
  ~Terminal() {
    if (terminal >= 0) ::close(terminal);
    ::close(master);
  }
  // What arrived, blocking until something does; empty once the command ended.
  std::string read_some() {
    char buffer[4096];
    for (;;) {
      const ssize_t n = ::read(master, buffer, sizeof buffer);
      if (n > 0) return std::string(buffer, static_cast<std::size_t>(n));
      if (n < 0 && errno == EINTR) continue;
      return {};
    }
  }
  std::string read_to_end() {
    std::string all;
    for (std::string more; !(more = read_some()).empty();) all += more;
    return all;
  }
  int master = -1;
  int terminal = -1;
};

// Spawns args with stderr on the terminal (whose end here is then closed:
// reads end when the command exits) and stdout into out_path.
pid_t spawn_on(Terminal& t, std::vector<std::string> args, const std::filesystem::path& out_path) {
  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawn_file_actions_adddup2(&actions, t.terminal, STDERR_FILENO);
  ::posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  const pid_t pid = spawn(std::move(args), &actions);
  ::posix_spawn_file_actions_destroy(&actions);
  ::close(t.terminal);
  t.terminal = -1;
  return pid;
}

// The state letter of /proc/pid/stat ('R', 'S', 'T', ...), or 0.
char process_state(pid_t pid) {
  const auto stat = process_support::proc_stat(pid);
  return stat ? stat->state : 0;
}

using process_support::eventually;

// A sparse file of `bytes` (holes read as zeros: mapping it in is work for
// the kernel, not for the disk), removed however the test ends.
struct SparseFile {
  SparseFile(const std::string& name, std::uintmax_t bytes)
      : path(std::filesystem::temp_directory_path() /
             ("cancellable-cli-" + name + "-" + std::to_string(::getpid()) + ".json")) {
    { std::ofstream create(path); }
    std::filesystem::resize_file(path, bytes);
  }
  ~SparseFile() {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
  }
  std::filesystem::path path;
};

// True once a thread of pid, or of a child of pid, is inside openat(2)
// (/proc/<tid>/syscall starts with its number while it blocks there): the
// command, or its worker, waits for a FIFO's writer.
bool blocked_in_open(pid_t pid) {
  std::vector<pid_t> processes{pid};
  std::error_code gone;
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", gone)) {
    std::ifstream children(task.path() / "children");
    for (pid_t child = 0; children >> child;) processes.push_back(child);
  }
  for (const pid_t p : processes) {
    for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(p) + "/task", gone)) {
      std::ifstream syscall(task.path() / "syscall");
      long number = -1;
      if (syscall >> number && number == SYS_openat) return true;
    }
  }
  return false;
}

}  // namespace

TEST_CASE("Ctrl-C during a parse kills the worker and exits with status 130", "[cli]") {
  const Sample sample("interrupt", "300000000");
  const pid_t cli = spawn({CANCELLABLE_CLI, "parse", sample.json.string()});
  const pid_t worker = wait_for_child_of(cli, std::chrono::seconds(30));
  REQUIRE(worker > 0);
  ::kill(cli, SIGINT);
  CHECK(exit_status(cli) == 130);
  CHECK(process_support::wait_gone(worker));
}

TEST_CASE("parsing a file over 100 MB on a terminal shows a progress line and clears it", "[cli]") {
  const Sample sample("progress", "101000000");
  const auto [terminal, status] = run_on_terminal({CANCELLABLE_CLI, "parse", sample.json.string()}, sample.out);
  CHECK(status == 0);
  // The line is there from the start and rewritten in place ("\r"), with
  // the input's size, then overwritten with blanks; nothing else reaches the
  // terminal.
  CHECK(terminal.rfind("\rstarting ", 0) == 0);
  CHECK(terminal.find(" 101.0 MB ") != std::string::npos);
  const std::string blank = "\r" + std::string(64, ' ') + "\r";
  CHECK(terminal.size() >= blank.size());
  CHECK(terminal.substr(terminal.size() - blank.size()) == blank);
  const auto bytes = std::to_string(std::filesystem::file_size(sample.json));
  CHECK(sample.output().find(" MB (" + bytes + " bytes)\n") != std::string::npos);
}

TEST_CASE("on a terminal the progress line keeps moving and shows the bytes read and their rate", "[cli]") {
  // The input is a FIFO this test holds open: the worker waits in "reading"
  // for as long as the test wants, and the line must be redrawn meanwhile.
  const Fifo fifo("redraw");
  const Sample sample("redraw", "2000");
  Terminal terminal;
  const pid_t cli = spawn_on(terminal, {CANCELLABLE_CLI, "parse", fifo.path.string()}, sample.out);
  const int writer = ::open(fifo.path.c_str(), O_WRONLY | O_CLOEXEC);  // once the command opened it
  REQUIRE(writer >= 0);
  // Three redraws of "reading" with three different elapsed times.
  std::set<std::string> times;
  std::string received;
  while (times.size() < 3) {
    const std::string more = terminal.read_some();
    REQUIRE_FALSE(more.empty());  // (the command ended: it should be waiting for its input)
    received += more;
    for (std::size_t at = received.find("\rreading"); at != std::string::npos;
         at = received.find("\rreading", at + 1)) {
      const std::size_t end = received.find(" s", at);
      if (end != std::string::npos) times.insert(received.substr(end - 8, 8));
    }
  }
  // Half the input: the line shows the bytes read so far and a rate.
  const std::string json = cancellable::generate_json(4000, 4);
  const std::size_t half = json.size() / 2;
  REQUIRE(::write(writer, json.data(), half) == static_cast<ssize_t>(half));
  char kilobytes[32];
  std::snprintf(kilobytes, sizeof kilobytes, "%.1f kB, ", static_cast<double>(half) / 1e3);
  const std::string so_far = std::string("\rreading      ") + kilobytes;
  while (received.find(so_far) == std::string::npos) {
    const std::string more = terminal.read_some();
    REQUIRE_FALSE(more.empty());
    received += more;
  }
  const std::size_t line = received.find(so_far);
  CHECK(received.find(" kB/s", line) < received.find(" s ", line));
  REQUIRE(::write(writer, json.data() + half, json.size() - half) == static_cast<ssize_t>(json.size() - half));
  ::close(writer);
  received += terminal.read_to_end();
  CHECK(exit_status(cli) == 0);
  // Cleared before the result.
  const std::string blank = "\r" + std::string(64, ' ') + "\r";
  CHECK(received.substr(received.size() - blank.size()) == blank);
  CHECK(sample.output().find("bytes:    0.0 MB (" + std::to_string(json.size()) + " bytes)") != std::string::npos);
}

TEST_CASE("a file of 100 MB or less gets no progress line, even on a terminal", "[cli]") {
  const Sample sample("small", "2000000");
  const auto [terminal, status] = run_on_terminal({CANCELLABLE_CLI, "parse", sample.json.string()}, sample.out);
  CHECK(status == 0);
  CHECK(terminal.empty());
  CHECK(sample.output().find("objects:") != std::string::npos);
}

TEST_CASE("SIGTERM during a parse kills the worker and exits with status 143", "[cli]") {
  const Sample sample("terminate", "300000000");
  const pid_t cli = spawn({CANCELLABLE_CLI, "parse", sample.json.string()});
  const pid_t worker = wait_for_child_of(cli, std::chrono::seconds(30));
  REQUIRE(worker > 0);
  ::kill(cli, SIGTERM);
  CHECK(exit_status(cli) == 143);
  CHECK(process_support::wait_gone(worker));
}

TEST_CASE("Ctrl-C with the thread backend exits with 130 and says the parse was abandoned", "[cli]") {
  // The parse thread waits for input that never comes: it cannot be stopped,
  // and the command must not wait for it.
  const Fifo fifo("abandon");
  const Sample sample("abandon", "2000");
  Terminal terminal;
  const pid_t cli = spawn_on(terminal, {CANCELLABLE_CLI, "parse", fifo.path.string(), "--backend", "thread"}, sample.out);
  const int writer = ::open(fifo.path.c_str(), O_WRONLY | O_CLOEXEC);  // the command is past its set-up
  REQUIRE(writer >= 0);
  ::kill(cli, SIGINT);
  const std::string said = terminal.read_to_end();
  CHECK(exit_status(cli) == 130);
  ::close(writer);
  CHECK(said.find("interrupted by SIGINT; the parse thread was abandoned") != std::string::npos);
  CHECK(said.find("worker was killed") == std::string::npos);
}

TEST_CASE("Ctrl-C with the thread backend exits with 130 while the parse thread is inside madvise", "[cli]") {
  // 1 GB mapped in by the parse thread, 64 MiB per madvise call, each
  // reported on the progress line: once the first is reported, the thread
  // is inside the next call (its time out of the kernel is microseconds
  // between calls of ~0.1 s each, ~15 to go), and the signal must be taken
  // on another thread. (A thread busy in madvise shows "running" in
  // /proc/<pid>/task/<tid>/syscall, so the line is the way to know.)
  const SparseFile file("sparse", std::uintmax_t{1} << 30);
  const Sample sample("madvise", "2000");
  Terminal terminal;
  const pid_t cli = spawn_on(terminal, {CANCELLABLE_CLI, "parse", file.path.string(), "--backend", "thread"}, sample.out);
  std::string said;
  while (said.find(" of 1.07 GB, ") == std::string::npos) {
    const std::string more = terminal.read_some();
    REQUIRE_FALSE(more.empty());
    said += more;
  }
  ::kill(cli, SIGINT);
  said += terminal.read_to_end();
  INFO(said);
  CHECK(exit_status(cli) == 130);
  CHECK(said.find("interrupted by SIGINT; the parse thread was abandoned") != std::string::npos);
  CHECK(sample.output().empty());
}

TEST_CASE("Ctrl-Z stops the worker with the command and fg resumes both", "[cli]") {
  const Fifo fifo("stop");
  const Sample sample("stop", "2000");
  Terminal terminal;
  const pid_t cli = spawn_on(terminal, {CANCELLABLE_CLI, "parse", fifo.path.string()}, sample.out);
  const int writer = ::open(fifo.path.c_str(), O_WRONLY | O_CLOEXEC);
  REQUIRE(writer >= 0);
  const pid_t worker = wait_for_child_of(cli, std::chrono::seconds(30));
  REQUIRE(worker > 0);
  ::kill(cli, SIGTSTP);
  int status = 0;
  REQUIRE(eventually([&] { return ::waitpid(cli, &status, WUNTRACED | WNOHANG) == cli; }));
  CHECK(WIFSTOPPED(status));
  CHECK(eventually([&] { return process_state(worker) == 'T'; }));
  ::kill(cli, SIGCONT);
  CHECK(eventually([&] { return process_state(worker) != 'T'; }));
  const std::string json = cancellable::generate_json(2000, 5);
  REQUIRE(::write(writer, json.data(), json.size()) == static_cast<ssize_t>(json.size()));
  ::close(writer);
  (void)terminal.read_to_end();
  CHECK(exit_status(cli) == 0);
  CHECK(sample.output().find("objects:") != std::string::npos);
}

TEST_CASE("parse reads /dev/fd/N, as made by <(...), with both backends", "[cli]") {
  const char* backend = GENERATE("process", "fork", "thread");  // (fork: the older name of process)
  CAPTURE(backend);
  const Sample sample(std::string("devfd-") + backend, "2000");
  int pipe_fds[2];
  REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawn_file_actions_adddup2(&actions, pipe_fds[0], 5);
  ::posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, sample.out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  const pid_t cli = spawn({CANCELLABLE_CLI, "parse", "/dev/fd/5", "--json", "--backend", backend}, &actions);
  ::posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[0]);
  const std::string json = cancellable::generate_json(100000, 6);
  REQUIRE(::write(pipe_fds[1], json.data(), json.size()) == static_cast<ssize_t>(json.size()));
  ::close(pipe_fds[1]);
  CHECK(exit_status(cli) == 0);
  CHECK(sample.output().find("\"bytes\": " + std::to_string(json.size()) + ",") != std::string::npos);
}

TEST_CASE("generate writes exactly what the library's generate_json makes", "[cli]") {
  const Sample sample("generate", "2000");
  const auto written = sample.json.string() + ".generated";
  REQUIRE(exit_status(spawn({CANCELLABLE_CLI, "generate", "100kB", "--seed", "7", "-o", written})) == 0);
  std::ifstream file(written);
  const std::string contents{std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
  std::filesystem::remove(written);
  CHECK(contents == cancellable::generate_json(100000, 7));
  CHECK(contents != cancellable::generate_json(100000, 8));
}

TEST_CASE("parse with the pool backend prints the same counts as the fork backend", "[cli]") {
  const Sample sample("pool-counts", "2000000");
  const auto counts_of = [&](const char* backend) {
    REQUIRE(exit_status(spawn_with_output({CANCELLABLE_CLI, "parse", sample.json.string(), "--json", "--backend", backend},
                                          sample.out)) == 0);
    const std::string out = sample.output();
    const auto from = out.find("\"objects\"");
    const auto to = out.find(", \"parse_ms\"");
    REQUIRE(from != std::string::npos);
    REQUIRE(to != std::string::npos);
    return out.substr(from, to - from);
  };
  const std::string fork_counts = counts_of("process");
  CHECK(counts_of("pool") == fork_counts);
  CHECK(sample.output().find("\"backend\": \"pool\"") != std::string::npos);
  CHECK(sample.output().find("\"transfer_ms\": null") != std::string::npos);
  // --pool says the same.
  REQUIRE(exit_status(spawn_with_output({CANCELLABLE_CLI, "parse", sample.json.string(), "--json", "--pool"},
                                        sample.out)) == 0);
  CHECK(sample.output().find("\"backend\": \"pool\"") != std::string::npos);
  CHECK(sample.output().find(fork_counts) != std::string::npos);
  // ... and not together with another backend.
  CHECK(exit_status(spawn_with_output(
            {CANCELLABLE_CLI, "parse", sample.json.string(), "--pool", "--backend", "thread"}, sample.out)) != 0);
}

TEST_CASE("Ctrl-C during a parse with the pool backend kills the worker and exits with status 130", "[cli]") {
  const Sample sample("pool-interrupt", "300000000");
  const pid_t cli = spawn({CANCELLABLE_CLI, "parse", sample.json.string(), "--backend", "pool"});
  const pid_t worker = wait_for_child_of(cli, std::chrono::seconds(30));
  REQUIRE(worker > 0);
  ::kill(cli, SIGINT);
  CHECK(exit_status(cli) == 130);
  CHECK(process_support::wait_gone(worker));
}

// ---- cancellable fetch, against a server on 127.0.0.1 ----------------------

namespace {
// A temporary output path, removed however the test ends.
struct OutFile {
  explicit OutFile(const std::string& name)
      : path(std::filesystem::temp_directory_path() /
             ("cancellable-fetch-" + name + "-" + std::to_string(::getpid()))) {}
  ~OutFile() {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
  }
  std::string read() const {
    std::ifstream file(path);
    return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
  }
  std::filesystem::path path;
};
}  // namespace

TEST_CASE("fetch writes the body to standard output, or to the file given with -o", "[cli]") {
  test_http::Server server;
  OutFile out("stdout"), file("file");
  CHECK(exit_status(spawn_with_output({CANCELLABLE_CLI, "fetch", server.url("/hello")}, out.path)) == 0);
  CHECK(out.read() == "hello");
  CHECK(exit_status(spawn_with_output({CANCELLABLE_CLI, "fetch", server.url("/bytes/300000"), "-o", file.path},
                                      out.path)) == 0);
  CHECK(file.read() == std::string(300000, 'x'));
  CHECK(out.read().empty());
}

TEST_CASE("fetch --parse parses the JSON in a worker and prints its counts", "[cli]") {
  test_http::Server server;
  OutFile out("parse");
  CHECK(exit_status(spawn_with_output({CANCELLABLE_CLI, "fetch", server.url("/json/1000"), "--parse"}, out.path)) == 0);
  const std::string text = out.read();
  CHECK_THAT(text, Catch::Contains("objects:  1000\n") && Catch::Contains("arrays:   1\n") &&
                       Catch::Contains("booleans: 1000\n"));
}

TEST_CASE("fetch exits with 1 on a 404, a refused connection or a server's bad redirect, with 2 on the user's bad URL or proxy", "[cli]") {
  test_http::Server server;
  OutFile out("errors");
  CHECK(exit_status(spawn_with_output({CANCELLABLE_CLI, "fetch", server.url("/status/404")}, out.path)) == 1);
  CHECK(exit_status(spawn_with_output({CANCELLABLE_CLI, "fetch", "ftp://127.0.0.1/"}, out.path)) == 2);
  CHECK(exit_status(spawn_with_output({CANCELLABLE_CLI, "fetch", server.url("/redirect-ftp")}, out.path)) == 1);
  CHECK(exit_status(spawn_with_output({CANCELLABLE_CLI, "fetch", server.url("/hello"), "--proxy", "socks5://127.0.0.1:1"},
                                      out.path)) == 2);
  CHECK(exit_status(spawn_with_output({CANCELLABLE_CLI, "fetch", server.url("/malformed"), "--parse"}, out.path)) ==
        1);
}

TEST_CASE("fetch --proxy sends the request through the proxy given", "[cli]") {
  test_http::RawServer proxy([](test_http::RawConnection& c) {
    c.read_request();
    c.write("HTTP/1.1 200 OK\r\nContent-Length: 14\r\nConnection: close\r\n\r\nfrom the proxy");
  });
  OutFile out("proxy");
  CHECK(exit_status(spawn_with_output({CANCELLABLE_CLI, "fetch", "http://origin.test/x", "--proxy", proxy.url("")},
                                      out.path)) == 0);
  CHECK(out.read() == "from the proxy");
  CHECK(proxy.requests().at(0).starts_with("GET http://origin.test/x HTTP/1.1\r\n"));
}

TEST_CASE("fetch --timeout stops a server that never answers with status 124", "[cli]") {
  test_http::Server server;
  OutFile out("timeout");
  CHECK(exit_status(spawn_with_output({CANCELLABLE_CLI, "fetch", server.url("/hold"), "--timeout", "100ms"},
                                      out.path)) == 124);
}

TEST_CASE("Ctrl-C during a fetch exits with 130 and removes the partial file", "[cli]") {
  test_http::Server server;
  OutFile file("interrupted"), out("interrupted-out");
  const pid_t cli = spawn_with_output({CANCELLABLE_CLI, "fetch", server.url("/slow-body"), "-o", file.path}, out.path);
  server.wait_for_requests(1);
  REQUIRE(eventually([&] { return std::filesystem::exists(file.path); }));  // The headers arrived.
  ::kill(cli, SIGINT);
  CHECK(exit_status(cli) == 130);
  CHECK_FALSE(std::filesystem::exists(file.path));
}

TEST_CASE("fetch shows its progress on a terminal", "[cli]") {
  test_http::Server server;
  OutFile out("terminal");
  const auto [terminal, status] = run_on_terminal({CANCELLABLE_CLI, "fetch", server.url("/bytes/2000000"), "-o",
                                                   out.path.string() + ".body"}, out.path);
  std::filesystem::remove(out.path.string() + ".body");
  CHECK(status == 0);
  CHECK_THAT(terminal, Catch::Contains("downloading ") && Catch::Contains(" of 2.0 MB"));
}

#ifdef CANCELLABLE_FETCH_JSON_EXAMPLE  // (Built with the examples.)
TEST_CASE("The fetch_json example downloads and parses under one token", "[cli]") {
  test_http::Server server;
  OutFile out("example");
  // (/hold never answers: the second fetch is still running when it is cancelled.)
  CHECK(exit_status(spawn_with_output({CANCELLABLE_FETCH_JSON_EXAMPLE, server.url("/json/250"), server.url("/hold")},
                                      out.path)) == 0);
  CHECK_THAT(out.read(), Catch::Contains("parsed in a worker: 250 users") &&
                             Catch::Contains("second fetch abandoned: CancelledException"));
}
#endif

TEST_CASE("parse of a FIFO that no writer opens ends on --timeout with 124, with each backend", "[cli]") {
  const char* backend = GENERATE("process", "thread");
  CAPTURE(backend);
  const Fifo fifo(std::string("timeout-") + backend);
  const pid_t cli = spawn({CANCELLABLE_CLI, "parse", fifo.path.string(), "--timeout", "200ms", "--backend", backend});
  CHECK(exit_status(cli) == 124);
}

TEST_CASE("parse of a FIFO that no writer opens ends on Ctrl-C with 130 and SIGTERM with 143, with each backend",
          "[cli]") {
  const char* backend = GENERATE("process", "thread");
  const int sig = GENERATE(SIGINT, SIGTERM);
  CAPTURE(backend, sig);
  const Fifo fifo(std::string("signal-") + backend + "-" + std::to_string(sig));
  const Sample sample(std::string("fifo-signal-") + backend, "2000");
  Terminal terminal;
  const pid_t cli = spawn_on(terminal, {CANCELLABLE_CLI, "parse", fifo.path.string(), "--backend", backend}, sample.out);
  REQUIRE(eventually([&] { return blocked_in_open(cli); }));  // (past the set-up: the signal is the command's)
  ::kill(cli, sig);
  const std::string said = terminal.read_to_end();
  INFO(said);
  CHECK(exit_status(cli) == 128 + sig);
  CHECK(said.find(std::string("interrupted by SIG") + (sig == SIGINT ? "INT" : "TERM")) != std::string::npos);
}

TEST_CASE("parse honours CANCELLABLE_BACKEND, and an explicit --backend wins", "[cli]") {
  const Sample sample("environment", "2000");
  const auto run = [&](const char* environment_backend, std::vector<std::string> extra) {
    std::vector<std::string> args{"/usr/bin/env", std::string("CANCELLABLE_BACKEND=") + environment_backend,
                                  CANCELLABLE_CLI, "parse", sample.json.string(), "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    const pid_t cli = spawn_with_output(args, sample.out);
    const int status = exit_status(cli);
    return std::make_pair(status, sample.output());
  };
  const auto [thread_status, thread_out] = run("thread", {});
  CHECK(thread_status == 0);
  CHECK(thread_out.find("\"backend\": \"thread\"") != std::string::npos);
  const auto [process_status, process_out] = run("thread", {"--backend", "process"});
  CHECK(process_status == 0);
  CHECK(process_out.find("\"backend\": \"process\"") != std::string::npos);
  const auto [bad_status, bad_out] = run("gpu", {});
  CHECK(bad_status == 2);
}
