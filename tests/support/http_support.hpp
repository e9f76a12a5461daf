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
#include "support/process_support.hpp"

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

using process_support::eventually;

// (The client names its threads: "cancellable-io", "cancellable-dns",
// "cancellable-body".)
using process_support::thread_name_list;
using process_support::threads_named;

}  // namespace test_http
