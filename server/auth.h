// API-key authentication: "authorization: Bearer <key>" metadata checked against the keys of
// --api-key-file. Without a key file access is open and every caller is the anonymous owner "".
//
// The owner identity of a key is "key-" + 16 hex digits of a stable 64-bit hash of the key, so
// engine state (sessions) is scoped per key without keeping the key itself there or in logs.
//
// Thread rules: immutable after construction; safe to share.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace funnel {

class ApiKeyAuth {
 public:
  // Open access.
  ApiKeyAuth() = default;
  // One key per line; surrounding whitespace is trimmed; blank lines and lines starting with '#'
  // are ignored. InvalidArgument when the file cannot be read, holds no key, or a key contains
  // whitespace.
  static absl::StatusOr<ApiKeyAuth> FromFile(const std::string& path);
  static absl::StatusOr<ApiKeyAuth> FromKeys(std::vector<std::string> keys);

  bool enabled() const { return !keys_.empty(); }
  size_t num_keys() const { return keys_.size(); }

  // The caller's owner identity from the value of its "authorization" metadata (nullptr when
  // absent). Unauthenticated when keys are configured and the value is missing, not a Bearer
  // credential, or not one of the keys.
  absl::StatusOr<std::string> Authenticate(const std::string* authorization) const;

  static std::string OwnerOf(std::string_view key);

 private:
  std::vector<std::string> keys_;
  std::vector<std::string> owners_;  // parallel to keys_
};

}  // namespace funnel
