// Property test of the request parser: randomly mutated valid bodies (byte flips, insertions,
// deletions, truncation, and JSON-level replacement of field values by values of other types)
// never crash it, and every result is either a valid request or INVALID_ARGUMENT (an HTTP 400).
// Deterministic: fixed seeds.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "server/gateway/api_error.h"
#include "server/gateway/openai_request.h"

namespace funnel {
namespace {

using Json = nlohmann::json;

const std::vector<std::string>& Seeds() {
  static const auto* seeds = new std::vector<std::string>{
      R"({"model": "m", "messages": [{"role": "system", "content": "Be brief."},
          {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
          "temperature": 0.7, "top_p": 0.9, "max_tokens": 12, "stop": ["\n"], "n": 2,
          "seed": 3, "logprobs": true, "top_logprobs": 2, "stream": true,
          "stream_options": {"include_usage": true}, "user": "u"})",
      R"({"model": "m", "prompt": ["Once upon", [1, 2, 3]], "max_tokens": 5, "logprobs": 1,
          "session_id": "sess-r0-0123456789abcdef", "kv_compression": {"method": "pyramidkv",
          "budget": 64, "window": 8, "pooling": "max"}, "ignore_eos": true, "top_k": -1})",
      R"({"model": "m", "prompt": "x\u00e9\ud83d\ude00", "echo": false, "best_of": 1,
          "min_p": 0.1, "repetition_penalty": 1.2, "presence_penalty": 0.5,
          "frequency_penalty": 0.5, "max_completion_tokens": 3})",
  };
  return *seeds;
}

// Values of every JSON type, for replacing fields.
Json RandomValue(std::mt19937& rng) {
  switch (rng() % 9) {
    case 0:
      return nullptr;
    case 1:
      return rng() % 2 == 0;
    case 2:
      return static_cast<int64_t>(rng()) - (1LL << 31);
    case 3:
      return static_cast<double>(rng()) / 1e3 - 1e6;
    case 4:
      return "s";
    case 5:
      return Json::array({1, "a", nullptr});
    case 6:
      return Json::object({{"type", "text"}, {"x", 1}});
    case 7:
      return std::numeric_limits<uint64_t>::max();
    default:
      return Json::array();
  }
}

std::string MutateBytes(std::string s, std::mt19937& rng) {
  static const char kSpecial[] = "{}[]\",:\\\x00\xff\xc3\x80 0-e.tn";
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits && !s.empty(); ++e) {
    const size_t pos = rng() % s.size();
    switch (rng() % 5) {
      case 0:
        s[pos] = static_cast<char>(rng() % 256);
        break;
      case 1:
        s.insert(pos, 1, kSpecial[rng() % (sizeof(kSpecial) - 1)]);
        break;
      case 2:
        s.erase(pos, 1 + rng() % 8);
        break;
      case 3:
        s.resize(pos);
        break;
      default:
        s.insert(pos, s.substr(pos, rng() % 16));
        break;
    }
  }
  return s;
}

std::string MutateJson(const std::string& seed, std::mt19937& rng) {
  Json j = Json::parse(seed);
  std::vector<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
  const int edits = 1 + static_cast<int>(rng() % 3);
  for (int e = 0; e < edits; ++e) {
    const std::string& key = keys[rng() % keys.size()];
    if (rng() % 4 == 0) {
      j.erase(key);
    } else {
      j[key] = RandomValue(rng);
    }
  }
  return j.dump();
}

// A parse result is acceptable when it is a 400, or a request that satisfies the invariants.
void CheckResult(const absl::StatusOr<CompletionRequest>& r, const std::string& body,
                 int32_t max_choices) {
  if (!r.ok()) {
    ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << body;
    ASSERT_EQ(ApiErrorFromStatus(r.status()).http_status, 400);
    ASSERT_FALSE(r.status().message().empty());
    return;
  }
  ASSERT_FALSE(r->model.empty()) << body;
  ASSERT_FALSE(r->choices.empty()) << body;
  ASSERT_LE(static_cast<int32_t>(r->choices.size()), max_choices) << body;
  ASSERT_EQ(r->choices.size() % static_cast<size_t>(r->n), 0u) << body;
  ASSERT_GE(r->top_logprobs, -1);
  ASSERT_LE(r->top_logprobs, 20);
  for (const v1::GenerateRequest& g : r->choices) {
    ASSERT_NE(g.input_case(), v1::GenerateRequest::INPUT_NOT_SET) << body;
    ASSERT_GE(g.sampling().max_tokens(), 0);
  }
}

TEST(OpenAiRequestFuzz, ByteMutationsGiveValidRequestsOr400) {
  std::mt19937 rng(20261128);
  int rejected = 0, accepted = 0;
  for (int i = 0; i < 6000; ++i) {
    const std::string& seed = Seeds()[static_cast<size_t>(i) % Seeds().size()];
    const std::string body = MutateBytes(seed, rng);
    const Endpoint endpoint = i % 2 == 0 ? Endpoint::kChatCompletions : Endpoint::kCompletions;
    auto r = ParseCompletionRequest(endpoint, body, {.max_choices = 8});
    CheckResult(r, body, 8);
    (r.ok() ? accepted : rejected)++;
  }
  // Both outcomes occur, so the property was exercised on each side.
  EXPECT_GT(rejected, 1000);
  EXPECT_GT(accepted, 50);
}

TEST(OpenAiRequestFuzz, TypeMutationsGiveValidRequestsOr400) {
  std::mt19937 rng(7);
  int rejected = 0, accepted = 0;
  for (int i = 0; i < 6000; ++i) {
    const std::string& seed = Seeds()[static_cast<size_t>(i) % Seeds().size()];
    const std::string body = MutateJson(seed, rng);
    const Endpoint endpoint = seed.find("messages") != std::string::npos
                                  ? Endpoint::kChatCompletions
                                  : Endpoint::kCompletions;
    auto r = ParseCompletionRequest(endpoint, body, {.max_choices = 8});
    CheckResult(r, body, 8);
    (r.ok() ? accepted : rejected)++;
  }
  EXPECT_GT(rejected, 1000);
  EXPECT_GT(accepted, 100);
}

TEST(OpenAiRequestFuzz, SessionBodiesNeverCrash) {
  std::mt19937 rng(99);
  const std::string seed =
      R"({"model": "m", "prompt": "doc", "ttl_seconds": 5, "kv_compression": {"method": "h2o",
          "budget": 32}})";
  for (int i = 0; i < 3000; ++i) {
    const std::string body = i % 2 == 0 ? MutateBytes(seed, rng) : MutateJson(seed, rng);
    auto r = ParseSessionCreateRequest(body);
    if (!r.ok()) {
      ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << body;
    } else {
      ASSERT_NE(r->request.input_case(), v1::CreateSessionRequest::INPUT_NOT_SET) << body;
    }
  }
}

TEST(OpenAiRequestFuzz, DeepNestingIsRefusedBeforeParsing) {
  const std::string deep =
      "{\"model\": \"m\", \"prompt\": " + std::string(100000, '[') + std::string(100000, ']') + "}";
  auto r = ParseCompletionRequest(Endpoint::kCompletions, deep, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace funnel
