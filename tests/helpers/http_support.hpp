// What the HTTP tests share: the kind and text of a future's failure.
// Catch2 macros inside: call from the test's own thread only.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <thread>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cancellable/http.hpp"

namespace test_http {

// The kind of HttpError a future failed with (fails the test otherwise).
template <class T>
cancellable::http::HttpError::Kind error_kind(const cancellable::Future<T>& f) {
  try {
    f.get();
  } catch (const cancellable::http::HttpError& e) {
    INFO(e.what());
    return e.kind();
  }
  FAIL("no HttpError");
  return cancellable::http::HttpError::Kind::client_closed;
}

// What a future failed with, or "(succeeded)".
template <class T>
std::string error_text(const cancellable::Future<T>& f) {
  try {
    f.get();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(succeeded)";
}

// Waits (up to a minute) until pred() holds: for threads that end on their
// own, and for the kernel to drop a joined thread from /proc/self/task,
// which it may do a little after pthread_join returned.
template <class Pred>
bool eventually(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

// The names of this process's threads (the client names its threads:
// "cancellable-io", "cancellable-dns", "cancellable-body").
inline std::vector<std::string> thread_name_list() {
  std::vector<std::string> names;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::getline(comm, names.emplace_back());
  }
  return names;
}
inline int threads_named(const std::string& wanted) {
  auto names = thread_name_list();
  return static_cast<int>(std::count(names.begin(), names.end(), wanted));
}

}  // namespace test_http
