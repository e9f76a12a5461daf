// cancellable generate SIZE [--seed N] [-o FILE]: the test JSON of the
// benchmarks and the demo (cancellable::generate_json), reproducible.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include "cancellable/json_generator.hpp"
#include "tools/cli.hpp"

namespace cancellable::cli {

int run_generate(const GenerateArgs& args) {
  const std::string json = generate_json(static_cast<std::size_t>(args.bytes), args.seed);
  const bool to_stdout = args.output.empty() || args.output == "-";
  std::FILE* out = to_stdout ? stdout : std::fopen(args.output.c_str(), "wb");
  if (!out) {
    std::cerr << "cancellable: generate: cannot write " << args.output << ": " << std::strerror(errno) << "\n";
    return kExitError;
  }
  const bool written = std::fwrite(json.data(), 1, json.size(), out) == json.size();
  const bool closed = to_stdout ? std::fflush(out) == 0 : std::fclose(out) == 0;
  if (!written || !closed) {
    std::cerr << "cancellable: generate: cannot write " << (to_stdout ? "standard output" : args.output) << ": "
              << std::strerror(errno) << "\n";
    return kExitError;
  }
  return kExitOk;
}

}  // namespace cancellable::cli
