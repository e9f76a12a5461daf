// Download JSON and parse it in an isolate under one token: a deadline (or a
// cancel() from anywhere) stops whichever is running, the download or the
// worker's parse.
//
//   fetch_json http://127.0.0.1:8080/users.json [SLOW_URL]
//
// The second part abandons a download of SLOW_URL (default: the same URL;
// a local server may answer before the cancel, which it then says).
#include <simdjson.h>

#include <chrono>
#include <iostream>
#include <string>

#include "cancellable/cancellable.hpp"
#include "cancellable/http.hpp"
#include "cancellable/json.hpp"

int main(int argc, char** argv) {
  if (argc != 2 && argc != 3) {
    std::cerr << "usage: fetch_json URL [SLOW_URL]\n";
    return 2;
  }
  const std::string url = argv[1];
  const std::string slow_url = argc == 3 ? argv[2] : url;
  cancellable::http::Client client;

  // 1. One token for the download and the parse.
  cancellable::TimeoutCancellationToken token(std::chrono::seconds(30));
  try {
    std::string body = client.read(url, token).get();
    std::size_t users = cancellable::parse_json(
                            body, [](simdjson::dom::element root) { return root.get_array().size(); }, token)
                            .get();
    std::cout << "downloaded " << body.size() << " bytes, parsed in a worker: " << users << " users\n";
  } catch (const std::exception& e) {
    std::cerr << "fetch failed: " << e.what() << "\n";
    return 1;
  }

  // 2. The user navigates away: one cancel() abandons the request at once.
  cancellable::CancellationToken gone;
  auto pending = client.read(slow_url, gone);
  gone.cancel();
  try {
    pending.get();
    std::cout << "second fetch was over before the cancel\n";
  } catch (const cancellable::CancelledException&) {
    std::cout << "second fetch abandoned: CancelledException\n";
  }
  return 0;
}
