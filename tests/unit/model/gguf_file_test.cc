#include "runtime/model/gguf_file.h"

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/model/gguf_writer.h"
#include "tests/testing/test_data.h"

namespace funnel {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

// ---------------------------------------------------------------------------------------------
// Helpers

std::string StoriesPath() { return testing::SharedDataPath("models/stories260K/stories260K.gguf"); }

std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void WriteBytes(const std::string& path, std::span<const uint8_t> bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

class ScopedTempDir {
 public:
  ScopedTempDir() {
    std::string tmpl = ::testing::TempDir() + "/gguf_file_test_XXXXXX";
    const char* dir = ::mkdtemp(tmpl.data());
    path_ = dir != nullptr ? dir : "";
  }
  ~ScopedTempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void PutU32(std::vector<uint8_t>& buf, size_t at, uint32_t v) {
  ASSERT_LE(at + 4, buf.size());
  std::memcpy(buf.data() + at, &v, 4);
}
void PutU64(std::vector<uint8_t>& buf, size_t at, uint64_t v) {
  ASSERT_LE(at + 8, buf.size());
  std::memcpy(buf.data() + at, &v, 8);
}

// Offset just past the GGUF encoding of `s` (u64 length + bytes), which must occur exactly once.
size_t After(const std::vector<uint8_t>& buf, std::string_view s) {
  std::vector<uint8_t> needle;
  for (uint64_t len = s.size(), i = 0; i < 8; ++i) {
    needle.push_back(static_cast<uint8_t>(len >> (8 * i)));
  }
  needle.insert(needle.end(), s.begin(), s.end());
  auto it = std::search(buf.begin(), buf.end(), needle.begin(), needle.end());
  EXPECT_NE(it, buf.end()) << "'" << s << "' not found";
  if (it == buf.end()) return 0;
  EXPECT_EQ(std::search(it + 1, buf.end(), needle.begin(), needle.end()), buf.end())
      << "'" << s << "' occurs twice";
  return static_cast<size_t>(it - buf.begin()) + needle.size();
}

GgufValue UVal(GgufValueType t, uint64_t v) { return GgufValue{t, v}; }
GgufValue IVal(GgufValueType t, int64_t v) { return GgufValue{t, v}; }
GgufValue FVal(GgufValueType t, double v) { return GgufValue{t, v}; }
GgufValue BVal(bool v) { return GgufValue{GgufValueType::kBool, v}; }
GgufValue SVal(std::string v) { return GgufValue{GgufValueType::kString, std::move(v)}; }
GgufValue AVal(GgufValueType elem, std::vector<GgufValue> items) {
  return GgufValue{GgufValueType::kArray, GgufArray{elem, std::move(items)}};
}

::testing::AssertionResult SameValue(const GgufValue& a, const GgufValue& b) {
  if (a.type != b.type) {
    return ::testing::AssertionFailure()
           << "type " << static_cast<uint32_t>(a.type) << " vs " << static_cast<uint32_t>(b.type);
  }
  if (a.data.index() != b.data.index()) {
    return ::testing::AssertionFailure()
           << "variant index " << a.data.index() << " vs " << b.data.index();
  }
  if (const auto* x = std::get_if<GgufArray>(&a.data)) {
    const auto& y = std::get<GgufArray>(b.data);
    if (x->elem_type != y.elem_type) return ::testing::AssertionFailure() << "elem type";
    if (x->items.size() != y.items.size()) {
      return ::testing::AssertionFailure()
             << "array size " << x->items.size() << " vs " << y.items.size();
    }
    for (size_t i = 0; i < x->items.size(); ++i) {
      auto r = SameValue(x->items[i], y.items[i]);
      if (!r) return r << " at item " << i;
    }
    return ::testing::AssertionSuccess();
  }
  const bool same = std::visit(
      [&b](const auto& x) -> bool {
        using X = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<X, GgufArray>) {
          return false;
        } else {
          return x == std::get<X>(b.data);
        }
      },
      a.data);
  if (!same) return ::testing::AssertionFailure() << "values differ";
  return ::testing::AssertionSuccess();
}

std::vector<uint8_t> FloatBytes(const std::vector<float>& v) {
  std::vector<uint8_t> out(v.size() * 4);
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

std::vector<uint8_t> PatternBytes(size_t n, uint8_t seed) {
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(seed + i * 7);
  return out;
}

// Every metadata value type, including empty and nested arrays, in one list.
std::vector<std::pair<std::string, GgufValue>> AllValues() {
  using T = GgufValueType;
  return {
      {"v.u8", UVal(T::kUint8, 200)},
      {"v.i8", IVal(T::kInt8, -100)},
      {"v.u16", UVal(T::kUint16, 65535)},
      {"v.i16", IVal(T::kInt16, -32768)},
      {"v.u32", UVal(T::kUint32, 4000000000u)},
      {"v.i32", IVal(T::kInt32, -2000000000)},
      {"v.u64", UVal(T::kUint64, uint64_t{1} << 40)},
      {"v.u64max", UVal(T::kUint64, std::numeric_limits<uint64_t>::max())},
      {"v.i64", IVal(T::kInt64, std::numeric_limits<int64_t>::min())},
      {"v.f32", FVal(T::kFloat32, 1.5)},
      {"v.f64", FVal(T::kFloat64, 0.1)},
      {"v.true", BVal(true)},
      {"v.false", BVal(false)},
      {"v.str", SVal("h\xc3\xa9llo \xe2\x96\x81world")},
      {"v.empty_str", SVal("")},
      {"v.nul_str", SVal(std::string("a\0b", 3))},
      {"v.arr_u8", AVal(T::kUint8, {UVal(T::kUint8, 0), UVal(T::kUint8, 255)})},
      {"v.arr_i8", AVal(T::kInt8, {IVal(T::kInt8, -128), IVal(T::kInt8, 127)})},
      {"v.arr_u16", AVal(T::kUint16, {UVal(T::kUint16, 1), UVal(T::kUint16, 65535)})},
      {"v.arr_i16", AVal(T::kInt16, {IVal(T::kInt16, -7), IVal(T::kInt16, 7)})},
      {"v.arr_u32", AVal(T::kUint32, {UVal(T::kUint32, 4294967295u)})},
      {"v.arr_i32", AVal(T::kInt32, {IVal(T::kInt32, -1), IVal(T::kInt32, 2), IVal(T::kInt32, 3)})},
      {"v.arr_u64", AVal(T::kUint64, {UVal(T::kUint64, 5), UVal(T::kUint64, uint64_t{1} << 63)})},
      {"v.arr_i64", AVal(T::kInt64, {IVal(T::kInt64, -(int64_t{1} << 50))})},
      {"v.arr_f32", AVal(T::kFloat32, {FVal(T::kFloat32, -0.25), FVal(T::kFloat32, 3.0)})},
      {"v.arr_f64", AVal(T::kFloat64, {FVal(T::kFloat64, 1e300), FVal(T::kFloat64, -2.5)})},
      {"v.arr_bool", AVal(T::kBool, {BVal(true), BVal(false), BVal(true)})},
      {"v.arr_str", AVal(T::kString, {SVal("a"), SVal(""), SVal("\xe2\x96\x81the")})},
      {"v.arr_empty", AVal(T::kUint32, {})},
      {"v.arr_nested",
       AVal(T::kArray, {AVal(T::kInt32, {IVal(T::kInt32, 1), IVal(T::kInt32, 2)}),
                        AVal(T::kInt32, {}), AVal(T::kString, {SVal("x"), SVal("yz")})})},
  };
}

struct TensorSpec {
  std::string name;
  std::vector<int64_t> dims;
  GgmlType type;
  std::vector<uint8_t> bytes;
};

// F32/F16/BF16/Q8_0 tensors of 1..4 dims; the last one is exactly 32 bytes so that the file
// ends without padding (every strict prefix is then invalid).
std::vector<TensorSpec> AllTensors() {
  return {
      {"t.f32", {8, 3}, GgmlType::kF32, FloatBytes(std::vector<float>(24, 0.5f))},
      {"t.f16", {16, 2}, GgmlType::kF16, PatternBytes(64, 1)},
      {"t.bf16", {5}, GgmlType::kBF16, PatternBytes(10, 2)},
      {"t.q8_0", {64, 2}, GgmlType::kQ8_0, PatternBytes(4 * kQ8_0BlockBytes, 3)},
      {"t.f32_3d", {2, 3, 4}, GgmlType::kF32, PatternBytes(96, 4)},
      {"t.f16_4d", {2, 1, 3, 2}, GgmlType::kF16, PatternBytes(24, 5)},
      {"t.last", {8}, GgmlType::kF32, FloatBytes({1, 2, 3, 4, 5, 6, 7, 8})},
  };
}

GgufWriter AllTypesWriter(uint64_t alignment = 32) {
  GgufWriter w(alignment);
  for (const auto& [key, value] : AllValues()) w.AddValue(key, value);
  for (const TensorSpec& t : AllTensors()) w.AddTensor(t.name, t.dims, t.type, t.bytes);
  return w;
}

// A small file with one key of each simple kind and one tensor, for targeted corruption.
std::vector<uint8_t> SmallFile() {
  GgufWriter w;
  w.AddString("general.architecture", "llama");
  w.AddString("k.str", "hello");
  w.AddBool("k.bool", true);
  w.AddStringArray("k.arr", {"a", "b", "c"});
  w.AddInt32Array("k.ints", {1, 2, 3});
  w.AddTensor("t.first", {8}, GgmlType::kF32, FloatBytes(std::vector<float>(8, 1.0f)));
  w.AddTensor("t.second", {4, 2}, GgmlType::kF32, FloatBytes(std::vector<float>(8, 2.0f)));
  return w.Serialize();
}

absl::Status ParseStatus(std::span<const uint8_t> bytes) {
  return GgufFile::FromBytes(bytes).status();
}

void ExpectInvalid(const std::vector<uint8_t>& bytes, std::initializer_list<std::string> parts) {
  const absl::Status st = ParseStatus(bytes);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  for (const std::string& part : parts) EXPECT_THAT(std::string(st.message()), HasSubstr(part));
}

// ---------------------------------------------------------------------------------------------
// stories260K.gguf

TEST(GgufFileTest, OpensStories260K) {
  auto file_or = GgufFile::Open(StoriesPath());
  ASSERT_TRUE(file_or.ok()) << file_or.status();
  const GgufFile& f = **file_or;
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.path(), StoriesPath());
  EXPECT_EQ(f.metadata().size(), 19u);
  EXPECT_EQ(f.metadata().front().first, "tokenizer.ggml.tokens");

  EXPECT_EQ(*f.GetString("general.architecture"), "llama");
  EXPECT_EQ(*f.GetString("general.name"), "llama");
  EXPECT_EQ(*f.GetString("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(*f.GetInt("llama.embedding_length"), 64);
  EXPECT_EQ(*f.GetInt("llama.block_count"), 5);
  EXPECT_EQ(*f.GetInt("llama.feed_forward_length"), 172);
  EXPECT_EQ(*f.GetInt("llama.attention.head_count"), 8);
  EXPECT_EQ(*f.GetInt("llama.attention.head_count_kv"), 4);
  EXPECT_EQ(*f.GetInt("llama.context_length"), 2048);
  EXPECT_EQ(*f.GetInt("llama.rope.dimension_count"), 8);
  EXPECT_EQ(*f.GetInt("tokenizer.ggml.padding_token_id"), 4294967295);  // u32 max fits int64
  EXPECT_NEAR(*f.GetFloat("llama.attention.layer_norm_rms_epsilon"), 1e-5, 1e-12);
  EXPECT_EQ(f.Find("llama.context_length")->type, GgufValueType::kUint32);

  auto tokens = f.GetStringArray("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  ASSERT_EQ(tokens->size(), 512u);
  EXPECT_EQ((*tokens)[0], "<unk>");
  EXPECT_EQ((*tokens)[1], "<s>");
  EXPECT_EQ((*tokens)[2], "</s>");
  EXPECT_EQ((*tokens)[3], "<0x00>");
  auto scores = f.GetFloatArray("tokenizer.ggml.scores");
  ASSERT_TRUE(scores.ok()) << scores.status();
  EXPECT_EQ(scores->size(), 512u);
  auto types = f.GetIntArray("tokenizer.ggml.token_type");
  ASSERT_TRUE(types.ok()) << types.status();
  ASSERT_EQ(types->size(), 512u);
  EXPECT_THAT(std::vector<int64_t>(types->begin(), types->begin() + 4), ElementsAre(2, 3, 3, 6));

  // Tensor list: names in file order, dims in ggml order (dims[0] contiguous), all F32.
  const auto& ts = f.tensors();
  ASSERT_EQ(ts.size(), 48u);
  EXPECT_EQ(ts[0].name, "token_embd.weight");
  EXPECT_THAT(ts[0].dims, ElementsAre(64, 512));
  EXPECT_EQ(ts[1].name, "output_norm.weight");
  EXPECT_THAT(ts[1].dims, ElementsAre(64));
  EXPECT_EQ(ts[2].name, "output.weight");
  EXPECT_THAT(ts[2].dims, ElementsAre(64, 512));
  const std::vector<std::pair<std::string, std::vector<int64_t>>> block = {
      {"attn_q.weight", {64, 64}},    {"attn_k.weight", {64, 32}},
      {"attn_v.weight", {64, 32}},    {"attn_output.weight", {64, 64}},
      {"attn_norm.weight", {64}},     {"ffn_gate.weight", {64, 172}},
      {"ffn_down.weight", {172, 64}}, {"ffn_up.weight", {64, 172}},
      {"ffn_norm.weight", {64}}};
  for (int l = 0; l < 5; ++l) {
    for (size_t j = 0; j < block.size(); ++j) {
      const GgufTensorInfo& t = ts[3 + l * block.size() + j];
      EXPECT_EQ(t.name, "blk." + std::to_string(l) + "." + block[j].first);
      EXPECT_EQ(t.dims, block[j].second) << t.name;
    }
  }
  const uint8_t* first = ts[0].data;
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(first) % 32, 0u);  // mmap is page aligned
  for (const GgufTensorInfo& t : ts) {
    EXPECT_EQ(t.type, GgmlType::kF32) << t.name;
    int64_t elems = 1;
    for (int64_t d : t.dims) elems *= d;
    EXPECT_EQ(t.num_elements, elems) << t.name;
    EXPECT_EQ(t.num_bytes, elems * 4) << t.name;
    EXPECT_EQ(t.offset % 32, 0u) << t.name;
    EXPECT_EQ(t.data, first + t.offset) << t.name;
    EXPECT_EQ(f.FindTensor(t.name), &t);
  }
  // The last tensor ends exactly at the end of the file.
  const GgufTensorInfo& last = ts.back();
  EXPECT_EQ(last.name, "blk.4.ffn_norm.weight");
  const auto file_size = std::filesystem::file_size(StoriesPath());
  EXPECT_EQ(last.data + last.num_bytes, first + (file_size - 14176));
  // Norm weights are finite and readable.
  float norm[64];
  std::memcpy(norm, ts[1].data, sizeof(norm));
  for (float v : norm) EXPECT_TRUE(std::isfinite(v));
  EXPECT_EQ(f.FindTensor("nope"), nullptr);
}

TEST(GgufFileTest, FromBytesMatchesOpen) {
  const std::vector<uint8_t> bytes = ReadBytes(StoriesPath());
  ASSERT_FALSE(bytes.empty());
  auto mapped = GgufFile::Open(StoriesPath());
  auto copied = GgufFile::FromBytes(bytes);
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  ASSERT_TRUE(copied.ok()) << copied.status();
  EXPECT_EQ((*copied)->path(), "<memory>");
  ASSERT_EQ((*mapped)->metadata().size(), (*copied)->metadata().size());
  for (size_t i = 0; i < (*mapped)->metadata().size(); ++i) {
    EXPECT_EQ((*mapped)->metadata()[i].first, (*copied)->metadata()[i].first);
    EXPECT_TRUE(SameValue((*mapped)->metadata()[i].second, (*copied)->metadata()[i].second));
  }
  ASSERT_EQ((*mapped)->tensors().size(), (*copied)->tensors().size());
  for (size_t i = 0; i < (*mapped)->tensors().size(); ++i) {
    const GgufTensorInfo& a = (*mapped)->tensors()[i];
    const GgufTensorInfo& b = (*copied)->tensors()[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.offset, b.offset);
    ASSERT_EQ(a.num_bytes, b.num_bytes);
    EXPECT_EQ(std::memcmp(a.data, b.data, static_cast<size_t>(a.num_bytes)), 0) << a.name;
    // The copy holds the file bytes: the tensor data is where the file says.
    EXPECT_EQ(
        std::memcmp(b.data, bytes.data() + 14176 + b.offset, static_cast<size_t>(b.num_bytes)), 0)
        << b.name;
  }
}

TEST(GgufFileTest, TypedGettersReportMissingKeysAndMismatches) {
  auto f = GgufFile::Open(StoriesPath());
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufFile& g = **f;
  EXPECT_FALSE(g.Has("no.such.key"));
  for (const absl::Status& st :
       {g.GetInt("no.such.key").status(), g.GetFloat("no.such.key").status(),
        g.GetBool("no.such.key").status(), g.GetString("no.such.key").status(),
        g.GetStringArray("no.such.key").status(), g.GetFloatArray("no.such.key").status(),
        g.GetIntArray("no.such.key").status()}) {
    EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
    EXPECT_THAT(std::string(st.message()), HasSubstr("no.such.key"));
  }
  auto expect_mismatch = [](const absl::Status& st, const std::string& key) {
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr(key));
  };
  expect_mismatch(g.GetInt("general.architecture").status(), "general.architecture");
  expect_mismatch(g.GetFloat("general.architecture").status(), "general.architecture");
  expect_mismatch(g.GetBool("llama.block_count").status(), "llama.block_count");
  expect_mismatch(g.GetString("llama.block_count").status(), "llama.block_count");
  expect_mismatch(g.GetInt("llama.attention.layer_norm_rms_epsilon").status(),
                  "llama.attention.layer_norm_rms_epsilon");
  expect_mismatch(g.GetStringArray("tokenizer.ggml.scores").status(), "tokenizer.ggml.scores");
  expect_mismatch(g.GetStringArray("general.name").status(), "general.name");
  expect_mismatch(g.GetIntArray("tokenizer.ggml.tokens").status(), "tokenizer.ggml.tokens");
  expect_mismatch(g.GetIntArray("tokenizer.ggml.scores").status(), "tokenizer.ggml.scores");
  expect_mismatch(g.GetFloatArray("tokenizer.ggml.tokens").status(), "tokenizer.ggml.tokens");
  expect_mismatch(g.GetFloatArray("llama.block_count").status(), "llama.block_count");
  // GetFloat accepts integers; GetFloatArray accepts integer arrays.
  EXPECT_EQ(*g.GetFloat("llama.block_count"), 5.0);
  auto types = g.GetFloatArray("tokenizer.ggml.token_type");
  ASSERT_TRUE(types.ok()) << types.status();
  EXPECT_EQ((*types)[0], 2.0f);
}

// ---------------------------------------------------------------------------------------------
// Writer round trip

void ExpectAllTypesFile(const GgufFile& f, uint64_t alignment) {
  EXPECT_EQ(f.alignment(), alignment);
  const auto values = AllValues();
  const size_t extra = alignment != 32 ? 1 : 0;  // the writer adds general.alignment first
  ASSERT_EQ(f.metadata().size(), values.size() + extra);
  if (extra) {
    EXPECT_EQ(f.metadata()[0].first, "general.alignment");
    EXPECT_EQ(*f.GetInt("general.alignment"), static_cast<int64_t>(alignment));
  }
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(f.metadata()[i + extra].first, values[i].first);
    EXPECT_TRUE(SameValue(f.metadata()[i + extra].second, values[i].second)) << values[i].first;
    const GgufValue* found = f.Find(values[i].first);
    ASSERT_NE(found, nullptr) << values[i].first;
    EXPECT_TRUE(SameValue(*found, values[i].second)) << values[i].first;
  }

  const auto tensors = AllTensors();
  ASSERT_EQ(f.tensors().size(), tensors.size());
  const uint8_t* first = f.tensors()[0].data;
  uint64_t expected_offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const GgufTensorInfo& t = f.tensors()[i];
    const TensorSpec& spec = tensors[i];
    EXPECT_EQ(t.name, spec.name);
    EXPECT_EQ(t.dims, spec.dims) << spec.name;
    EXPECT_EQ(t.type, spec.type) << spec.name;
    EXPECT_EQ(t.offset, expected_offset) << spec.name;
    EXPECT_EQ(t.offset % alignment, 0u) << spec.name;
    EXPECT_EQ(t.num_bytes, static_cast<int64_t>(spec.bytes.size())) << spec.name;
    ASSERT_NE(t.data, nullptr) << spec.name;
    EXPECT_EQ(t.data, first + t.offset) << spec.name;
    EXPECT_EQ(std::memcmp(t.data, spec.bytes.data(), spec.bytes.size()), 0) << spec.name;
    expected_offset += (spec.bytes.size() + alignment - 1) / alignment * alignment;
  }
  EXPECT_EQ(f.FindTensor("t.q8_0")->num_elements, 128);
  EXPECT_EQ(f.FindTensor("t.f16_4d")->num_elements, 12);
}

TEST(GgufWriterRoundTripTest, EveryValueTypeAndTensorType) {
  const std::vector<uint8_t> bytes = AllTypesWriter().Serialize();
  EXPECT_EQ(bytes.size() % 32, 0u);
  auto f = GgufFile::FromBytes(bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->version(), 3u);
  ExpectAllTypesFile(**f, 32);
}

TEST(GgufWriterRoundTripTest, TypedGettersOnEveryType) {
  auto f_or = GgufFile::FromBytes(AllTypesWriter().Serialize());
  ASSERT_TRUE(f_or.ok()) << f_or.status();
  const GgufFile& f = **f_or;
  EXPECT_EQ(*f.GetInt("v.u8"), 200);
  EXPECT_EQ(*f.GetInt("v.i8"), -100);
  EXPECT_EQ(*f.GetInt("v.u16"), 65535);
  EXPECT_EQ(*f.GetInt("v.i16"), -32768);
  EXPECT_EQ(*f.GetInt("v.u32"), 4000000000);
  EXPECT_EQ(*f.GetInt("v.i32"), -2000000000);
  EXPECT_EQ(*f.GetInt("v.u64"), int64_t{1} << 40);
  EXPECT_EQ(*f.GetInt("v.i64"), std::numeric_limits<int64_t>::min());
  // A u64 beyond int64 does not fit: a type error, not a silently wrapped value.
  EXPECT_EQ(f.GetInt("v.u64max").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::get<uint64_t>(f.Find("v.u64max")->data), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(*f.GetFloat("v.f32"), 1.5);
  EXPECT_EQ(*f.GetFloat("v.f64"), 0.1);
  EXPECT_EQ(*f.GetFloat("v.i8"), -100.0);
  EXPECT_EQ(f.GetInt("v.f32").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(*f.GetBool("v.true"));
  EXPECT_FALSE(*f.GetBool("v.false"));
  EXPECT_EQ(f.GetBool("v.u8").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.GetInt("v.true").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*f.GetString("v.str"), "h\xc3\xa9llo \xe2\x96\x81world");
  EXPECT_EQ(*f.GetString("v.empty_str"), "");
  EXPECT_EQ(*f.GetString("v.nul_str"), std::string("a\0b", 3));

  EXPECT_THAT(*f.GetIntArray("v.arr_u8"), ElementsAre(0, 255));
  EXPECT_THAT(*f.GetIntArray("v.arr_i8"), ElementsAre(-128, 127));
  EXPECT_THAT(*f.GetIntArray("v.arr_u16"), ElementsAre(1, 65535));
  EXPECT_THAT(*f.GetIntArray("v.arr_i16"), ElementsAre(-7, 7));
  EXPECT_THAT(*f.GetIntArray("v.arr_u32"), ElementsAre(4294967295));
  EXPECT_THAT(*f.GetIntArray("v.arr_i32"), ElementsAre(-1, 2, 3));
  EXPECT_THAT(*f.GetIntArray("v.arr_i64"), ElementsAre(-(int64_t{1} << 50)));
  EXPECT_TRUE(f.GetIntArray("v.arr_empty")->empty());
  EXPECT_TRUE(f.GetFloatArray("v.arr_empty")->empty());
  // 2^63 does not fit int64.
  EXPECT_EQ(f.GetIntArray("v.arr_u64").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(*f.GetFloatArray("v.arr_f32"), ElementsAre(-0.25f, 3.0f));
  EXPECT_THAT(*f.GetFloatArray("v.arr_i32"), ElementsAre(-1.0f, 2.0f, 3.0f));
  EXPECT_EQ(f.GetFloatArray("v.arr_f64")->size(), 2u);
  EXPECT_EQ(f.GetIntArray("v.arr_f32").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.GetIntArray("v.arr_bool").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(*f.GetStringArray("v.arr_str"), ElementsAre("a", "", "\xe2\x96\x81the"));
  EXPECT_EQ(f.GetStringArray("v.arr_i32").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.GetStringArray("v.arr_empty").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.GetIntArray("v.arr_nested").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.GetFloatArray("v.arr_nested").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.GetStringArray("v.arr_nested").status().code(), absl::StatusCode::kInvalidArgument);
  const auto& nested = std::get<GgufArray>(f.Find("v.arr_nested")->data);
  EXPECT_EQ(nested.elem_type, GgufValueType::kArray);
  ASSERT_EQ(nested.items.size(), 3u);
  EXPECT_EQ(std::get<GgufArray>(nested.items[1].data).items.size(), 0u);
  EXPECT_EQ(std::get<std::string>(std::get<GgufArray>(nested.items[2].data).items[1].data), "yz");
}

TEST(GgufWriterRoundTripTest, WriteFileMatchesSerializeAndMapsAligned) {
  ScopedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  for (uint64_t alignment : {32, 64, 256}) {
    SCOPED_TRACE(alignment);
    const GgufWriter w = AllTypesWriter(alignment);
    const std::string path = dir.path() + "/all_" + std::to_string(alignment) + ".gguf";
    ASSERT_TRUE(w.WriteFile(path).ok());
    EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
    const std::vector<uint8_t> on_disk = ReadBytes(path);
    EXPECT_EQ(on_disk, w.Serialize());
    const std::vector<uint8_t> header = w.SerializeHeader();
    EXPECT_EQ(header.size() % alignment, 0u);
    ASSERT_LE(header.size(), on_disk.size());
    EXPECT_TRUE(std::equal(header.begin(), header.end(), on_disk.begin()));

    auto f = GgufFile::Open(path);
    ASSERT_TRUE(f.ok()) << f.status();
    ExpectAllTypesFile(**f, alignment);
    // The mapping is page aligned, so absolute data pointers honour the file's alignment.
    for (const GgufTensorInfo& t : (*f)->tensors()) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % alignment, 0u) << t.name;
    }
  }
}

TEST(GgufWriterRoundTripTest, CustomAlignment64) {
  const std::vector<uint8_t> bytes = AllTypesWriter(64).Serialize();
  EXPECT_EQ(bytes.size() % 64, 0u);
  auto f = GgufFile::FromBytes(bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->alignment(), 64u);
  ExpectAllTypesFile(**f, 64);
  // Offsets step by whole 64-byte units: 96 bytes of F32 take 128.
  EXPECT_EQ((*f)->FindTensor("t.f16")->offset, 128u);
}

TEST(GgufWriterRoundTripTest, NoTensorsNoMetadata) {
  const std::vector<uint8_t> bytes = GgufWriter().Serialize();
  EXPECT_EQ(bytes.size(), 32u);  // 24-byte header padded to the alignment
  auto f = GgufFile::FromBytes(bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE((*f)->metadata().empty());
  EXPECT_TRUE((*f)->tensors().empty());
  // Without tensors the padding is optional.
  EXPECT_TRUE(GgufFile::FromBytes(std::span(bytes.data(), 24)).ok());
}

TEST(GgufFileTest, Version2Parses) {
  std::vector<uint8_t> bytes = AllTypesWriter().Serialize();
  PutU32(bytes, 4, 2);
  auto f = GgufFile::FromBytes(bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->version(), 2u);
  ExpectAllTypesFile(**f, 32);

  std::vector<uint8_t> stories = ReadBytes(StoriesPath());
  PutU32(stories, 4, 2);
  auto s = GgufFile::FromBytes(stories);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ((*s)->version(), 2u);
  EXPECT_EQ((*s)->tensors().size(), 48u);
  EXPECT_EQ(*(*s)->GetString("general.architecture"), "llama");
}

TEST(GgufFileTest, UnknownTensorTypesParseWithoutData) {
  GgufWriter w;
  w.AddTensor("q4k", {256, 2}, GgmlType::kQ4_K, PatternBytes(288, 9));
  w.AddTensor("odd", {3}, static_cast<GgmlType>(99), PatternBytes(7, 9));
  w.AddTensor("i8", {3}, GgmlType::kI8, PatternBytes(3, 9));
  auto f = GgufFile::FromBytes(w.Serialize());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->FindTensor("q4k")->type, GgmlType::kQ4_K);
  EXPECT_EQ((*f)->FindTensor("q4k")->data, nullptr);
  EXPECT_EQ((*f)->FindTensor("odd")->data, nullptr);
  EXPECT_NE((*f)->FindTensor("i8")->data, nullptr);
  EXPECT_EQ((*f)->FindTensor("i8")->num_bytes, 3);
}

TEST(GgmlTypeTest, NamesAndLayouts) {
  EXPECT_EQ(GgmlTypeName(GgmlType::kF32), "F32");
  EXPECT_EQ(GgmlTypeName(GgmlType::kF16), "F16");
  EXPECT_EQ(GgmlTypeName(GgmlType::kBF16), "BF16");
  EXPECT_EQ(GgmlTypeName(GgmlType::kQ8_0), "Q8_0");
  EXPECT_EQ(GgmlTypeName(GgmlType::kQ4_K), "Q4_K");
  EXPECT_EQ(GgmlTypeName(static_cast<GgmlType>(99)), "type(99)");
  EXPECT_EQ(GetGgmlTypeLayout(GgmlType::kF32).block_bytes, 4);
  EXPECT_EQ(GetGgmlTypeLayout(GgmlType::kF16).block_bytes, 2);
  EXPECT_EQ(GetGgmlTypeLayout(GgmlType::kBF16).block_bytes, 2);
  EXPECT_EQ(GetGgmlTypeLayout(GgmlType::kQ8_0).block_elems, 32);
  EXPECT_EQ(GetGgmlTypeLayout(GgmlType::kQ8_0).block_bytes, 34);
  EXPECT_EQ(GetGgmlTypeLayout(GgmlType::kQ4_K).block_elems, 0);
}

// ---------------------------------------------------------------------------------------------
// Errors

TEST(GgufFileErrorTest, WrongMagic) {
  std::vector<uint8_t> bytes = SmallFile();
  bytes[3] = 'X';
  ExpectInvalid(bytes, {"not a GGUF file"});
  const std::string text = "{\"not\": \"a model\", \"padding\": \"..........\"}";
  ExpectInvalid(std::vector<uint8_t>(text.begin(), text.end()), {"not a GGUF file"});
  // Big-endian GGUF is not supported: also reported as a bad magic.
  std::vector<uint8_t> be = SmallFile();
  std::reverse(be.begin(), be.begin() + 4);
  ExpectInvalid(be, {"not a GGUF file"});
}

TEST(GgufFileErrorTest, EmptyInput) { ExpectInvalid({}, {"truncated", "magic"}); }

TEST(GgufFileErrorTest, UnsupportedVersions) {
  for (uint32_t version : {0u, 1u, 4u, 99u, 0xFFFFFFFFu}) {
    std::vector<uint8_t> bytes = SmallFile();
    PutU32(bytes, 4, version);
    ExpectInvalid(bytes, {"unsupported version " + std::to_string(version)});
  }
}

bool NamesTruncation(absl::string_view msg) {
  for (absl::string_view part :
       {"truncated", "bytes remain", "remaining bytes", "lies outside", "absurd"}) {
    if (absl::StrContains(msg, part)) return true;
  }
  return false;
}

TEST(GgufFileErrorTest, TruncationAtEveryOffsetFails) {
  for (const std::vector<uint8_t>& bytes : {SmallFile(), AllTypesWriter().Serialize()}) {
    ASSERT_TRUE(GgufFile::FromBytes(bytes).ok());
    for (size_t n = 0; n < bytes.size(); ++n) {
      const absl::Status st = ParseStatus(std::span(bytes.data(), n));
      ASSERT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << "prefix " << n << ": " << st;
      ASSERT_TRUE(NamesTruncation(st.message())) << "prefix " << n << ": " << st;
    }
  }
}

TEST(GgufFileErrorTest, TruncatedStories260K) {
  const std::vector<uint8_t> bytes = ReadBytes(StoriesPath());
  ASSERT_EQ(bytes.size(), 1185376u);
  // Every offset in the header (metadata, tensor infos, padding), then a stride through the data.
  std::vector<size_t> cuts;
  for (size_t n = 0; n <= 14176; ++n) cuts.push_back(n);
  for (size_t n = 14177; n < bytes.size(); n += 4093) cuts.push_back(n);
  cuts.push_back(bytes.size() - 1);
  for (size_t n : cuts) {
    const absl::Status st = ParseStatus(std::span(bytes.data(), n));
    ASSERT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << "prefix " << n << ": " << st;
    ASSERT_TRUE(NamesTruncation(st.message())) << "prefix " << n << ": " << st;
  }
  // The data section is where the tensor data lies.
  const absl::Status st = ParseStatus(std::span(bytes.data(), bytes.size() - 1));
  EXPECT_THAT(std::string(st.message()), HasSubstr("blk.4.ffn_norm.weight"));
}

TEST(GgufFileErrorTest, AbsurdCounts) {
  constexpr uint64_t kHuge = uint64_t{1} << 60;
  const std::vector<uint8_t> good = SmallFile();
  {
    std::vector<uint8_t> b = good;
    PutU64(b, 8, kHuge);
    ExpectInvalid(b, {"absurd tensor count"});
    PutU64(b, 8, std::numeric_limits<uint64_t>::max());
    ExpectInvalid(b, {"absurd tensor count"});
    PutU64(b, 8, 1000);  // plausible on its own but not for this file size
    ExpectInvalid(b, {"absurd tensor count 1000"});
  }
  {
    std::vector<uint8_t> b = good;
    PutU64(b, 16, kHuge);
    ExpectInvalid(b, {"absurd metadata count"});
    PutU64(b, 16, 200);
    ExpectInvalid(b, {"absurd metadata count 200"});
  }
  {  // array element count
    std::vector<uint8_t> b = good;
    const size_t at = After(b, "k.arr");  // u32 type, u32 elem type, u64 count
    PutU64(b, at + 8, kHuge);
    ExpectInvalid(b, {"k.arr", "array elements"});
    PutU64(b, at + 8, uint64_t{1} << 40);
    ExpectInvalid(b, {"k.arr", "array elements"});
  }
  {  // array element count of a 1-byte element type
    std::vector<uint8_t> b = good;
    const size_t at = After(b, "k.ints");
    PutU32(b, at + 4, static_cast<uint32_t>(GgufValueType::kUint8));
    PutU64(b, at + 8, uint64_t{1} << 40);
    ExpectInvalid(b, {"k.ints", "array elements"});
  }
  {  // key length (first key's length prefix at offset 24)
    std::vector<uint8_t> b = good;
    PutU64(b, 24, kHuge);
    ExpectInvalid(b, {"metadata key 0", "has length"});
  }
  {  // string value length
    std::vector<uint8_t> b = good;
    const size_t at = After(b, "k.str");  // u32 type, u64 length
    PutU64(b, at + 4, kHuge);
    ExpectInvalid(b, {"k.str", "has length"});
    PutU64(b, at + 4, std::numeric_limits<uint64_t>::max());
    ExpectInvalid(b, {"k.str", "has length"});
  }
  {  // string element length inside an array
    std::vector<uint8_t> b = good;
    const size_t at = After(b, "k.arr");
    PutU64(b, at + 16, kHuge);
    ExpectInvalid(b, {"k.arr", "has length"});
  }
  {  // tensor name length
    std::vector<uint8_t> b = good;
    const size_t at = After(b, "t.first");
    PutU64(b, at - 7 - 8, kHuge);
    ExpectInvalid(b, {"tensor 0 name", "has length"});
  }
  {  // a huge dimension
    std::vector<uint8_t> b = good;
    const size_t at = After(b, "t.second");  // u32 n_dims, dims...
    PutU64(b, at + 4, kHuge);
    ExpectInvalid(b, {"t.second", "invalid dimension"});
    PutU64(b, at + 4, 0);
    ExpectInvalid(b, {"t.second", "invalid dimension 0"});
    // Two individually plausible dimensions whose product is absurd.
    PutU64(b, at + 4, uint64_t{1} << 30);
    PutU64(b, at + 12, uint64_t{1} << 30);
    ExpectInvalid(b, {"t.second", "invalid dimension"});
  }
}

TEST(GgufFileErrorTest, ArrayElementLimit) {
  // More than 2^24 array elements in one file are refused before any is read (each would cost a
  // 48-byte value in memory), even when the file does hold that many bytes.
  const uint64_t count = (uint64_t{1} << 24) + 1;
  GgufWriter w;
  w.AddValue("big", AVal(GgufValueType::kUint8, {UVal(GgufValueType::kUint8, 0)}));
  std::vector<uint8_t> b = w.Serialize();
  const size_t at = After(b, "big");
  b.resize(at + 16);  // type, element type, count; then the elements
  PutU64(b, at + 8, count);
  b.resize(b.size() + count, 0);
  ExpectInvalid(b, {"'big'", "16777217 array elements", "limit"});
}

TEST(GgufFileErrorTest, TensorOffsetOutOfRange) {
  const std::vector<uint8_t> good = SmallFile();
  const size_t at = After(good, "t.second");  // u32 n_dims(2), 2 x u64, u32 type, u64 offset
  const size_t offset_at = at + 4 + 16 + 4;
  for (uint64_t offset : {uint64_t{64}, uint64_t{1} << 20, uint64_t{1} << 62,
                          std::numeric_limits<uint64_t>::max() - 31}) {
    std::vector<uint8_t> b = good;
    PutU64(b, offset_at, offset);
    ExpectInvalid(b, {"t.second", "lies outside"});
  }
  // Offset 0 (aliasing the first tensor) is in range; the original offset 32 ends exactly at the
  // end of the file.
  std::vector<uint8_t> b = good;
  PutU64(b, offset_at, 0);
  EXPECT_TRUE(ParseStatus(b).ok()) << ParseStatus(b);
  EXPECT_TRUE(ParseStatus(good).ok()) << ParseStatus(good);
}

TEST(GgufFileErrorTest, MisalignedTensorOffset) {
  const std::vector<uint8_t> good = SmallFile();
  const size_t offset_at = After(good, "t.second") + 4 + 16 + 4;
  for (uint64_t offset : {1, 4, 16, 33}) {
    std::vector<uint8_t> b = good;
    PutU64(b, offset_at, offset);
    ExpectInvalid(b, {"t.second", "not aligned to 32"});
  }
}

TEST(GgufFileErrorTest, DuplicateKeysAndTensors) {
  {
    GgufWriter w;
    w.AddUint32("dup.key", 1);
    w.AddString("other", "x");
    w.AddUint32("dup.key", 2);
    ExpectInvalid(w.Serialize(), {"duplicate metadata key 'dup.key'"});
  }
  {
    GgufWriter w;
    w.AddTensor("same", {8}, GgmlType::kF32, PatternBytes(32, 0));
    w.AddTensor("same", {8}, GgmlType::kF32, PatternBytes(32, 1));
    ExpectInvalid(w.Serialize(), {"duplicate tensor name 'same'"});
  }
}

TEST(GgufFileErrorTest, DimensionCounts) {
  {
    GgufWriter w;
    w.AddTensor("scalar", {}, GgmlType::kF32, PatternBytes(4, 0));
    ExpectInvalid(w.Serialize(), {"'scalar'", "0 dimensions"});
  }
  {
    GgufWriter w;
    w.AddTensor("five", {1, 1, 1, 1, 2}, GgmlType::kF32, PatternBytes(8, 0));
    ExpectInvalid(w.Serialize(), {"'five'", "5 dimensions"});
  }
  {  // an absurd dimension count is rejected before reading any shape
    std::vector<uint8_t> b = SmallFile();
    PutU32(b, After(b, "t.first"), 0xFFFFFFFFu);
    ExpectInvalid(b, {"'t.first'", "4294967295 dimensions"});
  }
}

TEST(GgufFileErrorTest, Q8_0RowLengthMustBeBlockMultiple) {
  GgufWriter w;
  w.AddTensor("bad.q8", {48, 2}, GgmlType::kQ8_0, PatternBytes(3 * kQ8_0BlockBytes, 0));
  ExpectInvalid(w.Serialize(), {"'bad.q8'", "row length 48", "Q8_0", "32"});
  // A multiple of 32 in a higher dimension does not help.
  GgufWriter w2;
  w2.AddTensor("bad.q8", {16, 4}, GgmlType::kQ8_0, PatternBytes(2 * kQ8_0BlockBytes, 0));
  ExpectInvalid(w2.Serialize(), {"'bad.q8'", "row length 16"});
}

TEST(GgufFileErrorTest, BadBoolByte) {
  for (uint8_t byte : {2, 0x80, 0xFF}) {
    std::vector<uint8_t> b = SmallFile();
    const size_t at = After(b, "k.bool");  // u32 type, u8 value
    ASSERT_EQ(b[at + 4], 1);
    b[at + 4] = byte;
    ExpectInvalid(b, {"k.bool", "bool value " + std::to_string(byte)});
  }
  // Inside an array too.
  GgufWriter w;
  w.AddValue("bools", AVal(GgufValueType::kBool, {BVal(false), BVal(true)}));
  std::vector<uint8_t> b = w.Serialize();
  b[After(b, "bools") + 4 + 4 + 8 + 1] = 7;
  ExpectInvalid(b, {"bools", "bool value 7"});
}

TEST(GgufFileErrorTest, UnknownValueTypes) {
  {
    std::vector<uint8_t> b = SmallFile();
    PutU32(b, After(b, "k.str"), 13);
    ExpectInvalid(b, {"k.str", "unknown value type 13"});
  }
  {
    std::vector<uint8_t> b = SmallFile();
    PutU32(b, After(b, "k.ints") + 4, 0xDEADBEEF);
    ExpectInvalid(b, {"unknown metadata value type"});
  }
}

TEST(GgufFileErrorTest, ArraysNestedTooDeeply) {
  using T = GgufValueType;
  GgufWriter w;
  w.AddValue("deep", AVal(T::kArray, {AVal(T::kArray, {AVal(T::kInt32, {})})}));
  ExpectInvalid(w.Serialize(), {"deep", "nested too deeply"});
}

TEST(GgufFileErrorTest, BadAlignment) {
  // Powers of two below 8 would let tensor data sit at addresses misaligned for its type.
  for (uint32_t align : {0u, 1u, 2u, 3u, 4u, 48u, 1u << 21}) {
    GgufWriter w;
    w.AddUint32("general.alignment", align);
    ExpectInvalid(w.Serialize(), {"general.alignment", "power of two"});
  }
  for (uint32_t align : {8u, 1u << 20}) {
    GgufWriter w;
    w.AddUint32("general.alignment", align);
    auto f = GgufFile::FromBytes(w.Serialize());
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ((*f)->alignment(), align);
  }
  // Any integer type is accepted for the value.
  GgufWriter w64;
  w64.AddValue("general.alignment", UVal(GgufValueType::kUint64, 16));
  w64.AddTensor("t", {3}, GgmlType::kF32, PatternBytes(12, 0));
  w64.AddTensor("u", {3}, GgmlType::kF32, PatternBytes(12, 1));
  auto f64 = GgufFile::FromBytes(w64.Serialize());
  ASSERT_TRUE(f64.ok()) << f64.status();
  EXPECT_EQ((*f64)->alignment(), 16u);
  EXPECT_EQ((*f64)->FindTensor("u")->offset, 32u);  // writer padded to 32; 32 % 16 == 0
  GgufWriter w;
  w.AddString("general.alignment", "32");
  ExpectInvalid(w.Serialize(), {"general.alignment"});
}

TEST(GgufFileErrorTest, TensorDataSectionMissing) {
  const std::vector<uint8_t> header = [] {
    GgufWriter w;
    w.AddTensor("t", {8}, GgmlType::kF32, PatternBytes(32, 0));
    return w.SerializeHeader();
  }();
  // Header only, and the header without its padding.
  ExpectInvalid(header, {"t", "lies outside"});
  const size_t unpadded = 24 + 8 + 1 + 4 + 8 + 4 + 8;
  ExpectInvalid(std::vector<uint8_t>(header.begin(), header.begin() + unpadded),
                {"tensor data section is missing"});
}

TEST(GgufFileOpenTest, MissingPathIsNotFound) {
  const std::string path = "/nonexistent/dir/model.gguf";
  auto f = GgufFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(f.status().message()), HasSubstr(path));
}

TEST(GgufFileOpenTest, DirectoryIsRejected) {
  ScopedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  auto f = GgufFile::Open(dir.path());
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("not a regular file"));
  EXPECT_THAT(std::string(f.status().message()), HasSubstr(dir.path()));
}

TEST(GgufFileOpenTest, EmptyAndCorruptFilesNameThePath) {
  ScopedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string empty = dir.path() + "/empty.gguf";
  WriteBytes(empty, {});
  auto f = GgufFile::Open(empty);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(f.status().message()), HasSubstr(empty));
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("truncated"));

  std::vector<uint8_t> bytes = SmallFile();
  bytes[0] = 'g';
  const std::string bad = dir.path() + "/bad.gguf";
  WriteBytes(bad, bytes);
  f = GgufFile::Open(bad);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(f.status().message()), HasSubstr(bad));
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("not a GGUF file"));

  // A truncated file on disk (mmap path) fails the same way.
  const std::vector<uint8_t> full = ReadBytes(StoriesPath());
  const std::string cut = dir.path() + "/cut.gguf";
  WriteBytes(cut, std::span(full.data(), full.size() / 2));
  f = GgufFile::Open(cut);
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("lies outside"));
}

}  // namespace
}  // namespace funnel
