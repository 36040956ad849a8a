// The on-disk form of one compressed-cache session (durable sessions, --session-dir).
//
// Layout (little-endian), version 1:
//   "FUNNELSS" | u32 version | body | u64 FNV-1a checksum of everything before it
//   body: str fingerprint | str id | str owner | policy | i64 created_ms | i64 expires_ms |
//         i64 ttl_ms | u64 n + i32[n] tokens | i64 num_positions | u32 layers | u64 entry_floats |
//         per layer: u64 n_l + f32[n_l * entry_floats]
//   str = u32 length + bytes; policy = u32 method | i64 budget | f64 ratio | i32 window |
//         u32 pooling | i32 kernel | f64 beta | u32 rounding
// Decoding validates everything (magic, version, checksum, lengths against the file size, enum
// ranges, the policy, ids and lengths against each other) and never trusts a count before
// checking that the bytes for it exist.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/kv/kv_policy.h"

namespace funnel {

struct SessionRecord {
  std::string fingerprint;  // the model and cache layout the K/V belongs to
  std::string id;
  std::string owner;
  KvPolicy policy;
  absl::Time created;
  absl::Time expires;
  absl::Duration ttl;
  std::vector<int32_t> tokens;  // the ids the cache holds
  int64_t num_positions = 0;
  int64_t entry_floats = 0;                // floats of one entry of one layer
  std::vector<std::vector<float>> layers;  // [layer][entries * entry_floats]
};

std::string EncodeSessionRecord(const SessionRecord& record);
// InvalidArgument (with what is wrong) for anything that is not a valid version-1 record.
absl::StatusOr<SessionRecord> DecodeSessionRecord(std::string_view bytes);

}  // namespace funnel
