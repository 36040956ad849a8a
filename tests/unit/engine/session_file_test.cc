// The session file codec: round trip, and every kind of damage gives an error, never a crash
// (mutation fuzzing with and without a repaired checksum).
#include "runtime/engine/session_file.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>

namespace funnel {
namespace {

// FNV-1a 64, written here independently of the codec, to repair checksums after mutations.
uint64_t Fnv(std::string_view b) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : b) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

std::string Reseal(std::string bytes) {
  if (bytes.size() < 8) return bytes;
  const uint64_t h = Fnv(std::string_view(bytes).substr(0, bytes.size() - 8));
  std::memcpy(bytes.data() + bytes.size() - 8, &h, 8);
  return bytes;
}

SessionRecord Sample() {
  SessionRecord r;
  r.fingerprint = "model.gguf|layers=3|entry_floats=4|vocab=64";
  r.id = "sess-r0-0123456789abcdef";
  r.owner = "key-00aa";
  r.policy = KvPolicy{.method = KvMethod::kPyramidKv, .budget = 6, .window = 2};
  r.created = absl::FromUnixMillis(1700000000123);
  r.expires = absl::FromUnixMillis(1700003600123);
  r.ttl = absl::Hours(1);
  r.tokens = {1, 5, 9, 33, 7, 2, 8, 8, 4, 3};
  r.num_positions = 10;
  r.entry_floats = 4;
  for (int l = 0; l < 3; ++l) {
    std::vector<float> layer;
    for (int e = 0; e < 6 + 2 * l; ++e) {
      for (int f = 0; f < 4; ++f) layer.push_back(0.25f * static_cast<float>(l * 100 + e * 4 + f));
    }
    r.layers.push_back(layer);
  }
  return r;
}

TEST(SessionFileTest, RoundTrip) {
  const SessionRecord r = Sample();
  auto got = DecodeSessionRecord(EncodeSessionRecord(r));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->fingerprint, r.fingerprint);
  EXPECT_EQ(got->id, r.id);
  EXPECT_EQ(got->owner, r.owner);
  EXPECT_EQ(got->policy.method, KvMethod::kPyramidKv);
  EXPECT_EQ(got->policy.budget, 6);
  EXPECT_EQ(got->policy.window, 2);
  EXPECT_EQ(got->created, r.created);
  EXPECT_EQ(got->expires, r.expires);
  EXPECT_EQ(got->ttl, r.ttl);
  EXPECT_EQ(got->tokens, r.tokens);
  EXPECT_EQ(got->num_positions, 10);
  EXPECT_EQ(got->entry_floats, 4);
  EXPECT_EQ(got->layers, r.layers);
}

TEST(SessionFileTest, RejectsDamage) {
  const std::string good = EncodeSessionRecord(Sample());
  EXPECT_FALSE(DecodeSessionRecord("").ok());
  EXPECT_FALSE(DecodeSessionRecord("not a session file at all").ok());
  std::string flipped = good;
  flipped[40] ^= 1;
  EXPECT_EQ(DecodeSessionRecord(flipped).status().code(), absl::StatusCode::kInvalidArgument);
  for (size_t cut : {size_t{12}, good.size() / 2, good.size() - 9}) {
    EXPECT_FALSE(DecodeSessionRecord(Reseal(good.substr(0, cut) + std::string(8, '\0'))).ok())
        << cut;
  }
  std::string version = good;
  version[8] = 2;
  EXPECT_FALSE(DecodeSessionRecord(Reseal(version)).ok());
  // Sealed but inconsistent: positions that disagree with the ids, a layer longer than them.
  SessionRecord r = Sample();
  r.num_positions = 11;
  EXPECT_FALSE(DecodeSessionRecord(EncodeSessionRecord(r)).ok());
  r = Sample();
  r.layers[1].resize(11 * 4);
  EXPECT_FALSE(DecodeSessionRecord(EncodeSessionRecord(r)).ok());
  r = Sample();
  r.policy.kernel = 4;  // even pooling kernel: an invalid policy
  EXPECT_FALSE(DecodeSessionRecord(EncodeSessionRecord(r)).ok());
}

TEST(SessionFileTest, MutationsNeverCrash) {
  const std::string good = EncodeSessionRecord(Sample());
  std::mt19937 rng(7);
  int unsealed_accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string b = good;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % b.size();
      switch (rng() % 4) {
        case 0:
          b[at] = static_cast<char>(rng());
          break;
        case 1:
          b.erase(at, 1 + rng() % 16);
          break;
        case 2:
          b.insert(at, std::string(1 + rng() % 8, static_cast<char>(rng())));
          break;
        default:
          std::memset(b.data() + at, 0xff, std::min<size_t>(8, b.size() - at));
          break;
      }
      if (b.empty()) b = "x";
    }
    // Half the time repair the checksum so that the field checks are exercised too.
    auto got = DecodeSessionRecord(i % 2 == 0 ? Reseal(b) : b);
    if (got.ok()) {
      EXPECT_EQ(got->num_positions, static_cast<int64_t>(got->tokens.size()));
      for (const auto& layer : got->layers) {
        EXPECT_LE(static_cast<int64_t>(layer.size()), got->num_positions * got->entry_floats);
      }
      if (i % 2 == 1 && b != good) ++unsealed_accepted;
    }
  }
  EXPECT_EQ(unsealed_accepted, 0) << "the checksum catches damage";
}

}  // namespace
}  // namespace funnel
