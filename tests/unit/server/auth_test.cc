// API-key authentication: key files, Bearer parsing and owner identities.
#include "server/auth.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

namespace funnel {
namespace {

namespace fs = std::filesystem;

// A file in a per-test temporary directory, removed with it.
class KeyFile {
 public:
  explicit KeyFile(const std::string& contents) {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("funnel_auth_test_" + std::to_string(::getpid()) + "_" + info->name());
    fs::create_directories(dir_);
    path_ = (dir_ / "keys").string();
    std::ofstream(path_) << contents;
  }
  ~KeyFile() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  fs::path dir_;
  std::string path_;
};

absl::StatusCode AuthCode(const ApiKeyAuth& auth, const std::string* value) {
  return auth.Authenticate(value).status().code();
}

TEST(ServerAuthTest, OpenAccessWithoutKeys) {
  ApiKeyAuth open;
  EXPECT_FALSE(open.enabled());
  EXPECT_EQ(open.num_keys(), 0u);
  const std::string anything = "Bearer whatever";
  const std::string garbage = "nonsense";
  EXPECT_EQ(*open.Authenticate(nullptr), "");
  EXPECT_EQ(*open.Authenticate(&anything), "");
  EXPECT_EQ(*open.Authenticate(&garbage), "");
}

TEST(ServerAuthTest, ValidBearerKeysMapToTheirOwners) {
  auto auth = ApiKeyAuth::FromKeys({"alpha-key", "beta-key"});
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_TRUE(auth->enabled());
  EXPECT_EQ(auth->num_keys(), 2u);
  for (const std::string key : {"alpha-key", "beta-key"}) {
    for (const std::string& value :
         {"Bearer " + key, "bearer " + key, "BEARER " + key, "  Bearer   " + key + "  "}) {
      auto owner = auth->Authenticate(&value);
      ASSERT_TRUE(owner.ok()) << "'" << value << "': " << owner.status();
      EXPECT_EQ(*owner, ApiKeyAuth::OwnerOf(key)) << value;
    }
  }
}

TEST(ServerAuthTest, MissingWrongOrMalformedCredentialsAreUnauthenticated) {
  auto auth = ApiKeyAuth::FromKeys({"alpha-key"});
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_EQ(AuthCode(*auth, nullptr), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(std::string(auth->Authenticate(nullptr).status().message()).find("missing API key"),
            std::string::npos);
  for (const std::string value :
       {"", "alpha-key", "Basic alpha-key", "Bearer", "Bearer ", "Bearer alpha",
        "Bearer alpha-key2", "Bearer xalpha-key", "Bearer ALPHA-KEY", "Bearer alpha-key extra",
        "Token alpha-key", "Beareralpha-key"}) {
    EXPECT_EQ(AuthCode(*auth, &value), absl::StatusCode::kUnauthenticated) << "'" << value << "'";
  }
  const std::string basic = "Basic alpha-key";
  EXPECT_NE(std::string(auth->Authenticate(&basic).status().message()).find("Bearer"),
            std::string::npos);
  const std::string wrong = "Bearer nope";
  EXPECT_EQ(auth->Authenticate(&wrong).status().message(), "invalid API key");
}

TEST(ServerAuthTest, OwnerIsFnv1a64OfTheKey) {
  // FNV-1a 64 test vectors (Fowler/Noll/Vo reference): "" and "a" and "foobar".
  EXPECT_EQ(ApiKeyAuth::OwnerOf(""), "key-cbf29ce484222325");
  EXPECT_EQ(ApiKeyAuth::OwnerOf("a"), "key-af63dc4c8601ec8c");
  EXPECT_EQ(ApiKeyAuth::OwnerOf("foobar"), "key-85944171f73967e8");
}

TEST(ServerAuthTest, OwnersAreStableAndDistinct) {
  std::set<std::string> owners;
  for (int i = 0; i < 1000; ++i) {
    const std::string key = "sk-" + std::to_string(i);
    const std::string owner = ApiKeyAuth::OwnerOf(key);
    EXPECT_EQ(owner, ApiKeyAuth::OwnerOf(key));
    EXPECT_EQ(owner.size(), 4u + 16u);
    EXPECT_EQ(owner.find(key), std::string::npos);  // the key itself never shows
    owners.insert(owner);
  }
  EXPECT_EQ(owners.size(), 1000u);
  // The same key in two registries gives the same owner (sessions survive a reload).
  auto a = ApiKeyAuth::FromKeys({"k1", "k2"});
  auto b = ApiKeyAuth::FromKeys({"k2"});
  const std::string value = "Bearer k2";
  EXPECT_EQ(*a->Authenticate(&value), *b->Authenticate(&value));
}

TEST(ServerAuthTest, FromKeysRejectsEmptyAndWhitespace) {
  EXPECT_EQ(ApiKeyAuth::FromKeys({}).status().code(), absl::StatusCode::kInvalidArgument);
  for (const std::string bad : {"has space", "tab\there", "new\nline"}) {
    auto auth = ApiKeyAuth::FromKeys({"ok", bad});
    EXPECT_EQ(auth.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ServerAuthTest, FromFileTrimsAndSkipsCommentsAndBlankLines) {
  KeyFile file("# team keys\n\n  first-key  \r\n\t# indented comment\nsecond-key\n\n");
  auto auth = ApiKeyAuth::FromFile(file.path());
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_EQ(auth->num_keys(), 2u);
  for (const std::string key : {"first-key", "second-key"}) {
    const std::string value = "Bearer " + key;
    EXPECT_EQ(*auth->Authenticate(&value), ApiKeyAuth::OwnerOf(key));
  }
  const std::string comment = "Bearer # team keys";
  EXPECT_EQ(AuthCode(*auth, &comment), absl::StatusCode::kUnauthenticated);
}

TEST(ServerAuthTest, FromFileErrorsNameTheFile) {
  auto missing = ApiKeyAuth::FromFile("/nonexistent/funnel/keys");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(missing.status().message()).find("/nonexistent/funnel/keys"),
            std::string::npos);

  KeyFile only_comments("# nothing here\n\n   \n");
  auto empty = ApiKeyAuth::FromFile(only_comments.path());
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(empty.status().message()).find(only_comments.path()), std::string::npos);
  EXPECT_NE(std::string(empty.status().message()).find("no API key"), std::string::npos);

  KeyFile spaced("good\nbad key\n");
  auto with_space = ApiKeyAuth::FromFile(spaced.path());
  ASSERT_FALSE(with_space.ok());
  EXPECT_NE(std::string(with_space.status().message()).find("whitespace"), std::string::npos);
}

}  // namespace
}  // namespace funnel
