#include "server/auth.h"

#include <cstdint>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace funnel {
namespace {

// Compares without an early exit on the first differing byte.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return diff == 0;
}

}  // namespace

std::string ApiKeyAuth::OwnerOf(std::string_view key) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a 64
  for (char c : key) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return absl::StrFormat("key-%016x", h);
}

absl::StatusOr<ApiKeyAuth> ApiKeyAuth::FromKeys(std::vector<std::string> keys) {
  ApiKeyAuth auth;
  for (std::string& key : keys) {
    for (char c : key) {
      if (absl::ascii_isspace(static_cast<unsigned char>(c))) {
        return absl::InvalidArgumentError("an API key contains whitespace");
      }
    }
    std::string owner = OwnerOf(key);
    for (size_t i = 0; i < auth.keys_.size(); ++i) {
      if (auth.keys_[i] != key && auth.owners_[i] == owner) {
        return absl::InvalidArgumentError("two API keys hash to the same owner; change one");
      }
    }
    auth.keys_.push_back(std::move(key));
    auth.owners_.push_back(std::move(owner));
  }
  if (auth.keys_.empty()) return absl::InvalidArgumentError("no API key given");
  return auth;
}

absl::StatusOr<ApiKeyAuth> ApiKeyAuth::FromFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("--api-key-file: cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  std::vector<std::string> keys;
  for (absl::string_view line : absl::StrSplit(ss.str(), '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    keys.emplace_back(line);
  }
  auto auth = FromKeys(std::move(keys));
  if (!auth.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--api-key-file ", path, ": ", auth.status().message()));
  }
  return auth;
}

absl::StatusOr<std::string> ApiKeyAuth::Authenticate(const std::string* authorization) const {
  if (!enabled()) return std::string();
  if (authorization == nullptr || authorization->empty()) {
    return absl::UnauthenticatedError("missing API key (metadata 'authorization: Bearer <key>')");
  }
  absl::string_view value = absl::StripAsciiWhitespace(*authorization);
  constexpr absl::string_view kScheme = "bearer ";
  if (value.size() <= kScheme.size() || !absl::StartsWithIgnoreCase(value, kScheme)) {
    return absl::UnauthenticatedError("authorization metadata must be 'Bearer <key>'");
  }
  absl::string_view key = absl::StripAsciiWhitespace(value.substr(kScheme.size()));
  int match = -1;
  for (size_t i = 0; i < keys_.size(); ++i) {
    if (ConstantTimeEquals(key, keys_[i])) match = static_cast<int>(i);
  }
  if (match < 0) return absl::UnauthenticatedError("invalid API key");
  return owners_[static_cast<size_t>(match)];
}

}  // namespace funnel
