// Writing tokenizer files into a per-test temporary directory (from the shared vocabularies,
// at test run time; nothing is copied into the repo).
#pragma once

#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace funnel::testing {

// A fresh directory under the test temp dir, named after the running test (and `suffix`).
inline std::filesystem::path FreshTempDir(const std::string& suffix = "") {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = std::string(info->test_suite_name()) + "." + info->name() + suffix;
  for (char& c : name) {
    if (c == '/') c = '_';
  }
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

inline void WriteFile(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
  ASSERT_TRUE(out.good()) << path;
}

inline void WriteJson(const std::filesystem::path& path, const nlohmann::json& json) {
  WriteFile(path, json.dump());
}

}  // namespace funnel::testing
