// FUZZ_CHECK: the invariant checks of the fuzz targets. A failed check prints the condition and
// a message and aborts, which libFuzzer reports as a crash and saves the input (crash-<sha1>).
// FUZZ_LOG: with FUNNEL_FUZZ_VERBOSE=1 in the environment, how far each input got (for replaying
// seeds: `FUNNEL_FUZZ_VERBOSE=1 build-fuzz/fuzz/<target> FILE...`); silent otherwise.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

namespace funnel::fuzz {

inline bool Verbose() {
  static const bool verbose = [] {
    const char* v = std::getenv("FUNNEL_FUZZ_VERBOSE");
    return v != nullptr && std::string(v) == "1";
  }();
  return verbose;
}

}  // namespace funnel::fuzz

#define FUZZ_LOG(message)                                               \
  do {                                                                  \
    if (::funnel::fuzz::Verbose()) {                                    \
      std::fprintf(stderr, "fuzz: %s\n", std::string(message).c_str()); \
    }                                                                   \
  } while (false)

#define FUZZ_CHECK(cond, message)                                                           \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed: %s\n", __FILE__, __LINE__, #cond, \
                   std::string(message).c_str());                                           \
      std::abort();                                                                         \
    }                                                                                       \
  } while (false)
