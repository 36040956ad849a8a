// SafetensorsFile, SafetensorsCheckpoint and the writer: round trips, and every validation rule
// with the message it gives, on hand-built bytes.
#include "runtime/model/safetensors_file.h"

#include <cmath>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/convert.h"
#include "runtime/model/safetensors_checkpoint.h"
#include "runtime/model/safetensors_writer.h"
#include "tests/unit/model/hf_test_util.h"

namespace funnel {
namespace {

using ::funnel::testing::FloatBytes;
using ::funnel::testing::RawSafetensors;
using ::funnel::testing::ScopedTempDir;
using ::testing::HasSubstr;

absl::StatusOr<std::unique_ptr<SafetensorsFile>> Parse(const std::string& header,
                                                       const std::vector<uint8_t>& data) {
  return SafetensorsFile::FromBytes(RawSafetensors(header, data), "t.safetensors");
}

// The message of a parse that must fail (empty when it unexpectedly succeeded).
std::string ParseError(const std::string& header, size_t data_bytes) {
  auto f = Parse(header, std::vector<uint8_t>(data_bytes, 0));
  if (f.ok()) return "";
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
  return std::string(f.status().message());
}

TEST(SafetensorsFileTest, ParsesHandWrittenFile) {
  // Two tensors, out of order in the header, plus metadata and trailing header spaces.
  const std::string header =
      R"({"b":{"dtype":"F16","shape":[3],"data_offsets":[8,14]},)"
      R"("__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  )";
  std::vector<uint8_t> data = FloatBytes({1.5f, -2.0f});
  for (float f : {0.5f, 1.0f, -3.0f}) {
    const uint16_t h = Fp32ToFp16(f);
    data.push_back(static_cast<uint8_t>(h & 0xFF));
    data.push_back(static_cast<uint8_t>(h >> 8));
  }
  auto f = Parse(header, data);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ((*f)->tensors().size(), 2u);
  EXPECT_EQ((*f)->tensors()[0].name, "a");  // data order
  EXPECT_EQ((*f)->metadata().at("format"), "pt");
  EXPECT_EQ((*f)->data_offset(), 8 + header.size());
  const SafetensorsTensor* a = (*f)->Find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, SafetensorsDtype::kF32);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(a->num_elements, 2);
  EXPECT_EQ(a->num_bytes(), 8);
  float av[2];
  std::memcpy(av, a->data, 8);
  EXPECT_EQ(av[0], 1.5f);
  EXPECT_EQ(av[1], -2.0f);
  const SafetensorsTensor* b = (*f)->Find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dtype, SafetensorsDtype::kF16);
  EXPECT_EQ(b->begin, 8u);
  uint16_t h;
  std::memcpy(&h, b->data + 4, 2);
  EXPECT_EQ(Fp16ToFp32(h), -3.0f);
  EXPECT_EQ((*f)->Find("c"), nullptr);
}

TEST(SafetensorsFileTest, EmptyHeaderAndZeroSizedTensors) {
  auto empty = Parse("{}", {});
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE((*empty)->tensors().empty());
  auto zero = Parse(R"({"z":{"dtype":"BF16","shape":[4,0],"data_offsets":[0,0]},)"
                    R"("s":{"dtype":"I8","shape":[],"data_offsets":[0,1]}})",
                    {7});
  ASSERT_TRUE(zero.ok()) << zero.status();
  EXPECT_EQ((*zero)->Find("z")->num_elements, 0);
  EXPECT_EQ((*zero)->Find("s")->num_elements, 1);  // a scalar
  EXPECT_EQ(*(*zero)->Find("s")->data, 7);
}

TEST(SafetensorsFileTest, AllDtypesHaveNamesAndSizes) {
  for (auto [name, size] : std::vector<std::pair<std::string, int64_t>>{{"BOOL", 1},
                                                                        {"U8", 1},
                                                                        {"I8", 1},
                                                                        {"F8_E5M2", 1},
                                                                        {"F8_E4M3", 1},
                                                                        {"I16", 2},
                                                                        {"U16", 2},
                                                                        {"F16", 2},
                                                                        {"BF16", 2},
                                                                        {"I32", 4},
                                                                        {"U32", 4},
                                                                        {"F32", 4},
                                                                        {"F64", 8},
                                                                        {"I64", 8},
                                                                        {"U64", 8}}) {
    auto d = ParseSafetensorsDtype(name);
    ASSERT_TRUE(d.ok()) << name;
    EXPECT_EQ(SafetensorsDtypeName(*d), name);
    EXPECT_EQ(SafetensorsDtypeSize(*d), size) << name;
  }
  EXPECT_FALSE(ParseSafetensorsDtype("F4").ok());
  EXPECT_FALSE(ParseSafetensorsDtype("f32").ok());
}

TEST(SafetensorsFileTest, HeaderLengthIsChecked) {
  std::vector<uint8_t> tiny = {1, 2, 3};
  auto f = SafetensorsFile::FromBytes(tiny);
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(f.status().message(), HasSubstr("too small"));

  std::vector<uint8_t> bytes = RawSafetensors("{}", {});
  bytes[0] = 200;  // header length 200 in a 10-byte file
  f = SafetensorsFile::FromBytes(bytes);
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(f.status().message(), HasSubstr("header length 200 reaches beyond the end"));

  std::memset(bytes.data(), 0xFF, 8);  // 2^64 - 1
  f = SafetensorsFile::FromBytes(bytes);
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(f.status().message(), HasSubstr("beyond the end of the file"));
}

TEST(SafetensorsFileTest, BadJsonIsNamed) {
  EXPECT_THAT(ParseError("[1,2]", 0), HasSubstr("does not start with '{'"));
  EXPECT_THAT(ParseError("", 0), HasSubstr("does not start with '{'"));
  EXPECT_THAT(ParseError(R"({"a":)", 0), HasSubstr("not valid JSON"));
  EXPECT_THAT(ParseError(R"({"a":{"dtype":"F32"} trailing)", 0), HasSubstr("not valid JSON"));
  EXPECT_THAT(ParseError(R"({"a":3})", 0), HasSubstr("tensor 'a': entry is not an object"));
  EXPECT_THAT(ParseError(R"({"__metadata__":{"k":1}})", 0), HasSubstr("not a string"));
  EXPECT_THAT(ParseError(R"({"__metadata__":[]})", 0), HasSubstr("__metadata__ is not an object"));
}

TEST(SafetensorsFileTest, BadEntriesAreNamed) {
  auto entry = [](const std::string& body) { return R"({"w":{)" + body + "}}"; };
  EXPECT_THAT(ParseError(entry(R"("dtype":"F32","shape":[1])"), 4), HasSubstr("needs dtype"));
  EXPECT_THAT(ParseError(entry(R"("dtype":"Q4","shape":[1],"data_offsets":[0,4])"), 4),
              HasSubstr("tensor 'w': unknown dtype 'Q4'"));
  EXPECT_THAT(ParseError(entry(R"("dtype":7,"shape":[1],"data_offsets":[0,4])"), 4),
              HasSubstr("dtype is not a string"));
  EXPECT_THAT(ParseError(entry(R"("dtype":"F32","shape":[-1],"data_offsets":[0,4])"), 4),
              HasSubstr("shape entry must be a non-negative integer, got -1"));
  EXPECT_THAT(ParseError(entry(R"("dtype":"F32","shape":[1.5],"data_offsets":[0,4])"), 4),
              HasSubstr("shape entry must be a non-negative integer"));
  EXPECT_THAT(ParseError(entry(R"("dtype":"F32","shape":4,"data_offsets":[0,4])"), 4),
              HasSubstr("shape is not an array"));
  EXPECT_THAT(ParseError(entry(R"("dtype":"F32","shape":[1],"data_offsets":[0])"), 4),
              HasSubstr("data_offsets must be [begin, end]"));
  EXPECT_THAT(ParseError(entry(R"("dtype":"F32","shape":[1],"data_offsets":[0,"4"]])"), 4),
              HasSubstr("not valid JSON"));
  EXPECT_THAT(ParseError(entry(R"("dtype":"F32","shape":[1],"data_offsets":[0,"4"])"), 4),
              HasSubstr("data_offsets end must be a non-negative integer"));
  EXPECT_THAT(ParseError(entry(R"("dtype":"F32","shape":[0],"data_offsets":[4,0])"), 4),
              HasSubstr("end 0 is before begin 4"));
  EXPECT_THAT(ParseError(entry(R"("dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1)"), 4),
              HasSubstr("unknown field 'x'"));
  EXPECT_THAT(ParseError(entry(R"("dtype":"F32","shape":[4294967296,4294967296,4294967296],)"
                               R"("data_offsets":[0,4])"),
                         4),
              HasSubstr("too many elements"));
}

TEST(SafetensorsFileTest, ByteSizeMustMatchDtypeAndShape) {
  EXPECT_THAT(ParseError(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,12]}})", 12),
              HasSubstr("tensor 'w': F32 shape [2, 3] needs 24 bytes but data_offsets [0, 12] "
                        "give 12"));
  EXPECT_THAT(ParseError(R"({"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}})", 8),
              HasSubstr("BF16 shape [3] needs 6 bytes"));
}

TEST(SafetensorsFileTest, OffsetsMustTileTheDataSection) {
  // Beyond the data section.
  EXPECT_THAT(ParseError(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 8),
              HasSubstr("data_offsets [4, 12] reach beyond the data section (8 bytes)"));
  // Overlap.
  EXPECT_THAT(ParseError(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                         12),
              HasSubstr("tensor 'b' [4, 12) overlaps tensor 'a' [0, 8)"));
  // Two names for the same bytes.
  EXPECT_THAT(ParseError(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                         8),
              HasSubstr("overlaps"));
  // A gap.
  EXPECT_THAT(ParseError(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                         R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                         12),
              HasSubstr("tensor 'b' starts at byte 8 but the previous tensor ends at 4"));
  EXPECT_THAT(ParseError(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
              HasSubstr("starts at byte 4"));
  // Unused bytes at the end.
  EXPECT_THAT(ParseError(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 7),
              HasSubstr("3 bytes of the data section after byte 4 belong to no tensor"));
}

TEST(SafetensorsFileTest, OpenReportsMissingFilesAndPrefixesErrorsWithThePath) {
  ScopedTempDir dir;
  auto missing = SafetensorsFile::Open(dir.Sub("none.safetensors"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  auto directory = SafetensorsFile::Open(dir.path());
  ASSERT_FALSE(directory.ok());
  EXPECT_THAT(directory.status().message(), HasSubstr("not a regular file"));
  testing::WriteText(dir.Sub("bad.safetensors"), "garbage!garbage");
  auto bad = SafetensorsFile::Open(dir.Sub("bad.safetensors"));
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr(dir.Sub("bad.safetensors") + ": safetensors:"));
}

TEST(SafetensorsWriterTest, RoundTripsThroughTheReader) {
  const std::vector<float> a = {1, 2, 3, 4, 5, 6};
  const std::vector<uint8_t> b = {9, 8, 7};
  std::vector<SafetensorsWriteEntry> entries;
  entries.push_back(SafetensorsBytesEntry(
      "layer.a", SafetensorsDtype::kF32, {2, 3},
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(a.data()), 24)));
  entries.push_back(SafetensorsBytesEntry("layer.b", SafetensorsDtype::kU8, {3}, b));
  std::ostringstream out;
  ASSERT_TRUE(WriteSafetensors(out, entries, {{"format", "pt"}}).ok());
  const std::string s = out.str();
  uint64_t header_len;
  std::memcpy(&header_len, s.data(), 8);
  EXPECT_EQ((8 + header_len) % 8, 0u);  // data section 8-byte aligned
  auto f = SafetensorsFile::FromBytes(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->metadata().at("format"), "pt");
  const SafetensorsTensor* ta = (*f)->Find("layer.a");
  ASSERT_NE(ta, nullptr);
  EXPECT_EQ(ta->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::memcmp(ta->data, a.data(), 24), 0);
  EXPECT_EQ(std::memcmp((*f)->Find("layer.b")->data, b.data(), 3), 0);
}

TEST(SafetensorsWriterTest, RejectsDuplicatesAndShortWrites) {
  const std::vector<uint8_t> b = {1, 2, 3, 4};
  std::ostringstream out;
  std::vector<SafetensorsWriteEntry> dup = {
      SafetensorsBytesEntry("x", SafetensorsDtype::kU8, {4}, b),
      SafetensorsBytesEntry("x", SafetensorsDtype::kU8, {4}, b)};
  EXPECT_THAT(WriteSafetensors(out, dup, {}).message(), HasSubstr("duplicate name 'x'"));
  std::vector<SafetensorsWriteEntry> short_write = {
      SafetensorsBytesEntry("x", SafetensorsDtype::kF32, {2}, b)};  // 4 of 8 bytes
  absl::Status st = WriteSafetensors(out, short_write, {});
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(st.message(), HasSubstr("wrote 4 bytes, expected 8"));
}

// ---------------------------------------------------------------------------------------------
// SafetensorsCheckpoint

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::WriteBytes(dir_.Sub("model-00001-of-00002.safetensors"),
                        RawSafetensors(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                                       FloatBytes({1.0f})));
    testing::WriteBytes(dir_.Sub("model-00002-of-00002.safetensors"),
                        RawSafetensors(R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                       R"("c":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                       FloatBytes({2.0f, 3.0f})));
  }
  void WriteIndex(const std::string& text) {
    testing::WriteText(dir_.Sub(kSafetensorsIndexFile), text);
  }
  std::string OpenError() {
    auto c = SafetensorsCheckpoint::Open(dir_.path());
    return c.ok() ? "" : std::string(c.status().message());
  }

  ScopedTempDir dir_;
};

float FirstFloat(const SafetensorsTensor* t) {
  float f;
  std::memcpy(&f, t->data, 4);
  return f;
}

TEST_F(CheckpointTest, ShardedIndex) {
  WriteIndex(R"({"metadata":{"total_size":12},"weight_map":{)"
             R"("a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors",)"
             R"("c":"model-00002-of-00002.safetensors"}})");
  auto c = SafetensorsCheckpoint::Open(dir_.path());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->files().size(), 2u);
  EXPECT_EQ((*c)->names().size(), 3u);
  EXPECT_EQ(FirstFloat((*c)->Find("a")), 1.0f);
  EXPECT_EQ(FirstFloat((*c)->Find("b")), 2.0f);
  EXPECT_EQ(FirstFloat((*c)->Find("c")), 3.0f);
  EXPECT_EQ((*c)->Find("d"), nullptr);
}

TEST_F(CheckpointTest, IndexErrorsNameTheProblem) {
  WriteIndex("{not json");
  EXPECT_THAT(OpenError(), HasSubstr("index is not valid JSON"));
  WriteIndex(R"({"metadata":{}})");
  EXPECT_THAT(OpenError(), HasSubstr("no \"weight_map\""));
  WriteIndex(R"({"weight_map":{}})");
  EXPECT_THAT(OpenError(), HasSubstr("empty weight_map"));
  WriteIndex(R"({"weight_map":{"a":"../model-00001-of-00002.safetensors"}})");
  EXPECT_THAT(OpenError(), HasSubstr("not a file name in the same directory"));
  WriteIndex(R"({"weight_map":{"a":"/etc/passwd"}})");
  EXPECT_THAT(OpenError(), HasSubstr("not a file name in the same directory"));
  WriteIndex(R"({"weight_map":{"a":3}})");
  EXPECT_THAT(OpenError(), HasSubstr("not a file name"));
  WriteIndex(R"({"weight_map":{"a":"model-00003-of-00002.safetensors"}})");
  EXPECT_THAT(OpenError(), HasSubstr("names shard 'model-00003-of-00002.safetensors' (for "
                                     "tensor 'a')"));
  WriteIndex(R"({"weight_map":{"b":"model-00001-of-00002.safetensors"}})");
  EXPECT_THAT(OpenError(), HasSubstr("maps tensor 'b' to 'model-00001-of-00002.safetensors', "
                                     "which has no such tensor"));
}

TEST_F(CheckpointTest, SingleFileAndNothing) {
  ScopedTempDir empty;
  auto none = SafetensorsCheckpoint::Open(empty.path());
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(none.status().message(), HasSubstr("model.safetensors.index.json"));

  std::filesystem::copy_file(dir_.Sub("model-00002-of-00002.safetensors"),
                             empty.Sub(kSafetensorsSingleFile));
  auto single = SafetensorsCheckpoint::Open(empty.path());
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ((*single)->names(), (std::vector<std::string>{"b", "c"}));
}

TEST_F(CheckpointTest, TensorInTwoFilesIsAnError) {
  std::vector<std::shared_ptr<const SafetensorsFile>> files;
  for (const char* name : {"x.safetensors", "y.safetensors"}) {
    auto f = SafetensorsFile::FromBytes(
        RawSafetensors(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                       FloatBytes({1.0f})),
        name);
    ASSERT_TRUE(f.ok());
    files.push_back(std::move(*f));
  }
  auto c = SafetensorsCheckpoint::FromFiles(files);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("tensor 'a' appears in both 'x.safetensors' and "
                                              "'y.safetensors'"));
}

}  // namespace
}  // namespace funnel
