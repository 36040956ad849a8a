// Locating the read-only test data in ../shared/data (never copied into the repo).
#pragma once

#include <cstdlib>
#include <string>
#include <string_view>

namespace funnel::testing {

// Absolute path of `relative` under the shared data folder. The folder is
// $FUNNEL_SHARED_DATA when set, else <source root>/../shared/data (baked in at build time).
inline std::string SharedDataPath(std::string_view relative) {
  const char* env = std::getenv("FUNNEL_SHARED_DATA");
  std::string root = (env != nullptr && *env != '\0') ? env : FUNNEL_SHARED_DATA_DIR;
  return root + "/" + std::string(relative);
}

// Directory holding the built executables (funnel, ...), for tests that run them.
inline std::string BinaryDir() { return FUNNEL_BINARY_DIR; }

}  // namespace funnel::testing
