#include "client/cli_args.h"

#include <gtest/gtest.h>

namespace funnel {
namespace {

const CliSpec kSpec{{"model", "top-k", "temp"}, {"json"}, {"stop"}};

TEST(CliArgs, ParsesOptionsFlagsAndRepeats) {
  auto a = CliArgs::Parse({"--model", "m.gguf", "--top-k=40", "--json", "--stop", "a", "--stop", "b"}, kSpec);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->Get("model"), "m.gguf");
  EXPECT_EQ(*a->GetInt("top-k", 0, 0, 100), 40);
  EXPECT_TRUE(a->Flag("json"));
  EXPECT_EQ(a->GetAll("stop"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(*a->GetDouble("temp", 0.5, 0, 2), 0.5);
}

TEST(CliArgs, RejectsMalformedInput) {
  for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
           {"model"}, {"--nope"}, {"--model"}, {"--json=1"}, {"--model", "a", "--model", "b"}, {"-x"}}) {
    EXPECT_EQ(CliArgs::Parse(bad, kSpec).status().code(), absl::StatusCode::kInvalidArgument)
        << bad[0];
  }
  auto a = CliArgs::Parse({"--top-k", "abc", "--temp", "nan"}, kSpec);
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE(a->GetInt("top-k", 0, 0, 100).ok());
  EXPECT_FALSE(a->GetDouble("temp", 0, 0, 2).ok());
  auto b = CliArgs::Parse({"--top-k", "101"}, kSpec);
  EXPECT_FALSE(b->GetInt("top-k", 0, 0, 100).ok());
  EXPECT_FALSE(b->Require("model").ok());
}

}  // namespace
}  // namespace funnel
