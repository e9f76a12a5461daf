// Offloading a JSON parse: simdjson runs in a worker process, the mapping
// builds the caller's own type there, and only that small result comes back.
// The input is generated in memory, so no file is needed.
#include <cancellable/cancellable.hpp>
#include <cancellable/json.hpp>
#include <cancellable/json_generator.hpp>

#include <chrono>
#include <iostream>
#include <string>

using namespace std::chrono_literals;

// What the caller wants from a large response: a few numbers, not the DOM.
struct UserStats {
  std::size_t users = 0;
  std::size_t active = 0;
  double total_balance = 0;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(users, active, total_balance);
  }
};

UserStats summarize(simdjson::dom::element root) {
  UserStats stats;
  for (simdjson::dom::element user : root.get_array()) {
    ++stats.users;
    stats.active += bool(user["active"]);
    stats.total_balance += double(user["balance"]);
  }
  return stats;
}

int main() {
  const std::string json = cancellable::generate_json(50'000'000);  // about 50 MB

  // The parse must finish within ten seconds or be abandoned (and its worker killed).
  cancellable::TimeoutCancellationToken deadline(10s);
  auto stats = cancellable::parse_json(json, summarize, deadline).get();
  std::cout << "parsed " << json.size() / 1'000'000 << " MB in a worker: " << stats.users
            << " users, " << stats.active << " active, total balance " << static_cast<long>(stats.total_balance)
            << "\n";

  // Bad input is an exception, never a crash.
  try {
    cancellable::parse_json(R"({"users": [1, 2,]})", summarize).get();
  } catch (const cancellable::JsonParseError& e) {
    std::cout << e.what() << "\n";
  }
  return 0;
}
