# Included by the top-level CMakeLists.txt when FUNNEL_FUZZ is ON, before any target is made:
# every target of the build (the code under test, the generated proto code) is compiled with
# AddressSanitizer, UndefinedBehaviorSanitizer (every report fatal) and libFuzzer's coverage
# instrumentation. Only the fuzz targets of tests/fuzz are meant to be built in such a build
# (scripts/fuzz builds the target funnel_fuzzers); everything else still configures.
if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  message(FATAL_ERROR "FUNNEL_FUZZ needs Clang (libFuzzer), e.g. CC=clang-14 CXX=clang++-14; "
    "this build uses ${CMAKE_CXX_COMPILER_ID}")
endif()
if(FUNNEL_KERNELS_ONLY)
  message(FATAL_ERROR "FUNNEL_FUZZ and FUNNEL_KERNELS_ONLY exclude each other")
endif()

set(FUNNEL_FUZZ_SANITIZERS -fsanitize=address,undefined -fno-sanitize-recover=all)
# _GLIBCXX_ASSERTIONS: libstdc++'s bounds checks (operator[] within capacity but past size, front()
# of an empty vector, ...), which ASan alone does not see; it changes no layout.
add_compile_options(${FUNNEL_FUZZ_SANITIZERS} -fsanitize=fuzzer-no-link -fno-omit-frame-pointer
  -D_GLIBCXX_ASSERTIONS)
add_link_options(${FUNNEL_FUZZ_SANITIZERS})
# GCC builds are the warning gate (-Werror); a warning only Clang reports must not fail the fuzz
# build of a change that builds cleanly there.
list(REMOVE_ITEM FUNNEL_WARNINGS -Werror)
