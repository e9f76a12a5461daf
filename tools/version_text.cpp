// cancellable --version: the library's version and those of what it was
// built with.
#include <openssl/opensslv.h>
#include <simdjson.h>

#include <boost/version.hpp>
#include <string>

#include "cancellable/version.hpp"
#include "tools/cli.hpp"

#define CANCELLABLE_STRINGIFY2(x) #x
#define CANCELLABLE_STRINGIFY(x) CANCELLABLE_STRINGIFY2(x)

namespace cancellable::cli {

std::string version_text() {
  const std::string boost = std::to_string(BOOST_VERSION / 100000) + "." + std::to_string(BOOST_VERSION / 100 % 1000) +
                            "." + std::to_string(BOOST_VERSION % 100);
  return std::string("cancellable ") + cancellable::version() + "\nbuilt with simdjson " +
         CANCELLABLE_STRINGIFY(SIMDJSON_VERSION) + ", Boost " + boost + ", " + OPENSSL_VERSION_TEXT;
}

}  // namespace cancellable::cli
