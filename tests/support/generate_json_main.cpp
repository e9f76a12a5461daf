// Test helper: writes generate_json(BYTES, SEED) to PATH.
#include <cstdlib>
#include <fstream>
#include <iostream>

#include "cancellable/json_generator.hpp"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: generate_json_file BYTES PATH [SEED]\n";
    return 2;
  }
  const auto bytes = std::strtoull(argv[1], nullptr, 10);
  const auto seed = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 1;
  std::ofstream(argv[2], std::ios::binary) << cancellable::generate_json(bytes, seed);
  return 0;
}
