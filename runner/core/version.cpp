#include "cancellable/version.hpp"

namespace cancellable {

const char* version() noexcept { return CANCELLABLE_VERSION_STRING; }

}  // namespace cancellable
