// Randomized-mutation fuzz of the safetensors reader, the HF config parser and the HF weight
// loader, built with AddressSanitizer and UndefinedBehaviorSanitizer (see CMakeLists.txt).
//
// Seeds: stories260K converted to HF (model.safetensors + config.json) and a small synthetic file
// with every dtype. Mutants come from byte-level edits (random bytes, bit flips, truncation,
// insertions, deletions, copied chunks, the 8-byte header length) and header-aware edits (numbers
// in the JSON replaced by edge values, dtype names swapped, characters inserted or deleted inside
// the header). Each mutant goes through SafetensorsFile::FromBytes, then (when it parses) every
// tensor byte is read and ModelWeights::FromHf loads it with the stories260K config. config.json
// mutants go through ModelConfigFromHfJson and, when they parse, through FromHf against the real
// checkpoint. Assertions: no crash or sanitizer report, every error has a message, and whatever
// loads is valid. Bounded by mutant counts (a few seconds); FUNNEL_FUZZ_SCALE multiplies them,
// FUNNEL_FUZZ_SEED changes the RNG seed. A sanitizer report prints the mutant's index and seed and
// writes it to $TMPDIR/safetensors_fuzz_crash.bin.
#include <sanitizer/common_interface_defs.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/convert.h"
#include "runtime/model/hf_config.h"
#include "runtime/model/hf_converter.h"
#include "runtime/model/model_weights.h"
#include "runtime/model/safetensors_checkpoint.h"
#include "runtime/model/safetensors_file.h"
#include "runtime/model/safetensors_writer.h"
#include "spdlog/spdlog.h"
#include "tests/testing/test_data.h"

extern "C" const char* __asan_default_options() {
  return "max_allocation_size_mb=256:allocator_may_return_null=0:detect_leaks=1";
}
extern "C" const char* __ubsan_default_options() { return "print_stacktrace=1:halt_on_error=1"; }

namespace funnel {
namespace {

std::vector<uint8_t>* g_current = nullptr;
std::string g_current_name;

void OnSanitizerDeath() {
  if (g_current == nullptr) return;
  const char* tmp = std::getenv("TMPDIR");
  const std::string path =
      std::string(tmp != nullptr ? tmp : "/tmp") + "/safetensors_fuzz_crash.bin";
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(g_current->data(), 1, g_current->size(), f);
    std::fclose(f);
  }
  std::fprintf(stderr, "safetensors_fuzz: sanitizer fired on %s; input saved to %s\n",
               g_current_name.c_str(), path.c_str());
}

double Scale() {
  const char* s = std::getenv("FUNNEL_FUZZ_SCALE");
  const double v = s != nullptr ? std::atof(s) : 1.0;
  return v > 0 ? v : 1.0;
}

uint64_t BaseSeed() {
  const char* s = std::getenv("FUNNEL_FUZZ_SEED");
  return s != nullptr ? std::strtoull(s, nullptr, 10) : 20240601;
}

std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// ---------------------------------------------------------------------------------------------
// Mutators

class Mutator {
 public:
  // `header_end`: where the JSON header ends (8 + header length) for safetensors seeds; the
  // whole input for JSON text seeds (header_start 0).
  Mutator(std::vector<uint8_t> seed, size_t header_start, size_t header_end, uint64_t rng_seed)
      : seed_(std::move(seed)),
        header_start_(header_start),
        header_end_(std::min(header_end, seed_.size())),
        rng_(rng_seed) {}

  std::vector<uint8_t> Next() {
    std::vector<uint8_t> b = seed_;
    const int ops = 1 + static_cast<int>(Below(3));
    for (int i = 0; i < ops; ++i) {
      if (Below(3) == 0) {
        ApplyBytes(b);
      } else {
        ApplyHeader(b);
      }
    }
    return b;
  }

 private:
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : rng_() % n; }

  size_t HeaderOffset(const std::vector<uint8_t>& b) {
    const size_t end = std::min(header_end_, b.size());
    if (end <= header_start_) return b.empty() ? 0 : Below(b.size());
    return header_start_ + Below(end - header_start_);
  }

  // Positions of the digit runs (with a leading '-') in the header.
  std::vector<std::pair<size_t, size_t>> Numbers(const std::vector<uint8_t>& b) {
    std::vector<std::pair<size_t, size_t>> runs;
    const size_t end = std::min(header_end_, b.size());
    for (size_t i = header_start_; i < end;) {
      if (std::isdigit(b[i]) || (b[i] == '-' && i + 1 < end && std::isdigit(b[i + 1]))) {
        size_t j = i + 1;
        while (j < end && (std::isdigit(b[j]) || b[j] == '.' || b[j] == 'e')) ++j;
        runs.emplace_back(i, j);
        i = j;
      } else {
        ++i;
      }
    }
    return runs;
  }

  std::string EdgeNumber(const std::string& original) {
    static const char* kEdges[] = {"0",
                                   "1",
                                   "-1",
                                   "2",
                                   "3",
                                   "7",
                                   "8",
                                   "1.5",
                                   "1e30",
                                   "-0",
                                   "65535",
                                   "4294967295",
                                   "4294967296",
                                   "1073741824",
                                   "2147483647",
                                   "9223372036854775807",
                                   "9223372036854775808",
                                   "18446744073709551615",
                                   "18446744073709551616",
                                   "99999999999999999999999"};
    switch (Below(4)) {
      case 0: {  // off by a little
        char* end = nullptr;
        const long long v = std::strtoll(original.c_str(), &end, 10);
        return std::to_string(v + static_cast<long long>(Below(9)) - 4);
      }
      case 1:
        return std::to_string(rng_() % 100000);
      default:
        return kEdges[Below(std::size(kEdges))];
    }
  }

  void Replace(std::vector<uint8_t>& b, size_t begin, size_t end, const std::string& with) {
    b.erase(b.begin() + static_cast<std::ptrdiff_t>(begin),
            b.begin() + static_cast<std::ptrdiff_t>(end));
    b.insert(b.begin() + static_cast<std::ptrdiff_t>(begin), with.begin(), with.end());
    // Keep the 8-byte header length consistent with the edit (mostly), so the JSON is parsed.
    if (header_start_ == 8 && b.size() >= 8 && Below(8) != 0) {
      uint64_t n;
      std::memcpy(&n, b.data(), 8);
      n += with.size();
      n -= end - begin;
      std::memcpy(b.data(), &n, 8);
      header_end_ = 8 + n;
    }
  }

  void ApplyHeader(std::vector<uint8_t>& b) {
    const size_t saved_end = header_end_;
    switch (Below(6)) {
      case 0:
      case 1:
      case 2: {  // a number becomes an edge value
        auto runs = Numbers(b);
        if (runs.empty()) break;
        auto [s, e] = runs[Below(runs.size())];
        Replace(b, s, e,
                EdgeNumber(std::string(b.begin() + static_cast<std::ptrdiff_t>(s),
                                       b.begin() + static_cast<std::ptrdiff_t>(e))));
        break;
      }
      case 3: {  // a dtype (or any quoted word) becomes another
        static const char* kWords[] = {"F32",  "F16",   "BF16",  "I8",           "U8",
                                       "F64",  "I64",   "BOOL",  "Q4",           "",
                                       "null", "dtype", "shape", "data_offsets", "__metadata__"};
        const size_t at = HeaderOffset(b);
        const size_t end = std::min(header_end_, b.size());
        size_t q1 = at;
        while (q1 < end && b[q1] != '"') ++q1;
        size_t q2 = q1 + 1;
        while (q2 < end && b[q2] != '"') ++q2;
        if (q2 >= end) break;
        Replace(b, q1 + 1, q2, kWords[Below(std::size(kWords))]);
        break;
      }
      case 4: {  // insert a JSON-ish character
        static const char kChars[] = "{}[],:\"0-. x\\";
        const size_t at = HeaderOffset(b);
        Replace(b, at, at, std::string(1, kChars[Below(sizeof(kChars) - 1)]));
        break;
      }
      default: {  // delete a few characters
        const size_t at = HeaderOffset(b);
        const size_t n = std::min<size_t>(1 + Below(6), b.size() - std::min(at, b.size()));
        Replace(b, at, at + n, "");
        break;
      }
    }
    header_end_ = saved_end;
  }

  void ApplyBytes(std::vector<uint8_t>& b) {
    if (b.empty()) return;
    switch (Below(6)) {
      case 0:  // random byte anywhere
        b[Below(b.size())] = static_cast<uint8_t>(rng_());
        break;
      case 1:  // bit flip in the header
        b[HeaderOffset(b) % b.size()] ^= static_cast<uint8_t>(1u << Below(8));
        break;
      case 2:  // truncate
        b.resize(Below(b.size()));
        break;
      case 3: {  // the header length itself
        if (b.size() < 8) break;
        const uint64_t edges[] = {0,
                                  1,
                                  2,
                                  7,
                                  8,
                                  b.size(),
                                  b.size() - 8,
                                  b.size() - 7,
                                  uint64_t{1} << 40,
                                  ~uint64_t{0},
                                  100'000'001};
        uint64_t v = edges[Below(std::size(edges))];
        if (Below(2) == 0) {
          std::memcpy(&v, b.data(), 8);
          v += Below(5) - 2;
        }
        std::memcpy(b.data(), &v, 8);
        break;
      }
      case 4: {  // insert a run
        const size_t at = Below(b.size());
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), 1 + Below(16),
                 static_cast<uint8_t>(rng_()));
        break;
      }
      default: {  // copy a chunk over another place
        const size_t from = Below(b.size()), to = Below(b.size());
        const size_t n =
            std::min({static_cast<size_t>(1 + Below(48)), b.size() - from, b.size() - to});
        std::memmove(b.data() + to, b.data() + from, n);
        break;
      }
    }
  }

  std::vector<uint8_t> seed_;
  size_t header_start_;
  size_t header_end_;
  std::mt19937_64 rng_;
};

// ---------------------------------------------------------------------------------------------
// Exercising inputs

struct Stats {
  int mutants = 0;
  int parsed = 0;
  int loaded = 0;
  uint64_t checksum = 0;
};

uint64_t Touch(const void* data, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t sum = 0;
  for (int64_t i = 0; i < n; ++i) sum = sum * 31 + p[i];
  return sum;
}

void TouchWeights(const ModelWeights& w, Stats& stats) {
  ASSERT_TRUE(w.config().Validate().ok());
  auto touch = [&](const WeightMatrix& m) {
    stats.checksum += Touch(m.data, m.rows * RowBytes(m.type, m.cols));
  };
  touch(w.token_embedding());
  touch(w.output());
  ASSERT_EQ(w.output_norm().size(), static_cast<size_t>(w.config().dim));
  ASSERT_EQ(w.rope_inv_freq().size(), static_cast<size_t>(w.config().rope_dim / 2));
  for (int32_t l = 0; l < w.config().num_layers; ++l) {
    const LayerWeights& lw = w.layer(l);
    for (const WeightMatrix* m :
         {&lw.wq, &lw.wk, &lw.wv, &lw.wo, &lw.w_gate, &lw.w_up, &lw.w_down}) {
      touch(*m);
    }
  }
}

void ExpectMessage(const absl::Status& st) {
  if (!st.ok()) {
    ASSERT_FALSE(st.message().empty()) << "error without a message: " << st.code();
  }
}

// A safetensors mutant: parse, read every byte, load as stories260K.
void ExerciseFile(const std::vector<uint8_t>& bytes, const ModelConfig& config, Stats& stats) {
  ++stats.mutants;
  auto file = SafetensorsFile::FromBytes(bytes, "mutant.safetensors");
  if (!file.ok()) {
    ExpectMessage(file.status());
    return;
  }
  ++stats.parsed;
  std::shared_ptr<const SafetensorsFile> f(std::move(*file));
  uint64_t covered = 0;
  for (const SafetensorsTensor& t : f->tensors()) {
    ASSERT_EQ(f->Find(t.name), &t);
    ASSERT_LE(t.begin, t.end);
    covered += t.end - t.begin;
    stats.checksum += Touch(t.data, t.num_bytes());
  }
  ASSERT_EQ(f->data_offset() + covered, bytes.size());  // exactly tiled
  auto ckpt = SafetensorsCheckpoint::FromFiles({f});
  if (!ckpt.ok()) {
    ExpectMessage(ckpt.status());
    return;
  }
  auto w =
      ModelWeights::FromHf(config, std::shared_ptr<const SafetensorsCheckpoint>(std::move(*ckpt)));
  if (!w.ok()) {
    ExpectMessage(w.status());
    return;
  }
  ++stats.loaded;
  TouchWeights(**w, stats);
}

// A config.json mutant: parse; load against the real checkpoint when it parses.
void ExerciseConfig(const std::vector<uint8_t>& bytes,
                    const std::shared_ptr<const SafetensorsCheckpoint>& ckpt, Stats& stats) {
  ++stats.mutants;
  const std::string text(bytes.begin(), bytes.end());
  auto c = ModelConfigFromHfJson(text, "", "mutant");
  if (!c.ok()) {
    ExpectMessage(c.status());
    return;
  }
  ++stats.parsed;
  ASSERT_TRUE(c->Validate().ok());
  ASSERT_EQ(RopeInverseFrequencies(*c).size(), static_cast<size_t>(c->rope_dim / 2));
  (void)HfConfigJson(*c, "float32");
  auto w = ModelWeights::FromHf(*c, ckpt);
  if (!w.ok()) {
    ExpectMessage(w.status());
    return;
  }
  ++stats.loaded;
  TouchWeights(**w, stats);
}

template <typename Fn>
void Fuzz(const std::string& name, const std::vector<uint8_t>& seed, size_t header_start,
          size_t header_end, int count, Fn exercise) {
  const uint64_t rng_seed = BaseSeed() ^ std::hash<std::string>()(name);
  Mutator mutator(seed, header_start, header_end, rng_seed);
  std::vector<uint8_t> current;
  g_current = &current;
  __sanitizer_set_death_callback(OnSanitizerDeath);
  Stats stats;
  const auto start = std::chrono::steady_clock::now();
  const int n = static_cast<int>(count * Scale());
  for (int i = 0; i < n; ++i) {
    current = mutator.Next();
    g_current_name =
        name + " mutant " + std::to_string(i) + " (rng seed " + std::to_string(rng_seed) + ")";
    exercise(current, stats);
    if (::testing::Test::HasFatalFailure()) {
      ADD_FAILURE() << g_current_name;
      break;
    }
  }
  g_current = nullptr;
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s: %d mutants, %d parsed, %d loaded as a model; %.1f s\n", name.c_str(),
              stats.mutants, stats.parsed, stats.loaded, secs);
  // Both outcomes must occur, or the mutants are not reaching the parser's depths.
  if (n >= 200) {
    EXPECT_GT(stats.parsed, n / 50) << name;
    EXPECT_LT(stats.parsed, n * 9 / 10) << name;
    EXPECT_GT(stats.loaded, n / 100) << name;
  }
}

// ---------------------------------------------------------------------------------------------
// Seeds

class SafetensorsFuzzTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    spdlog::set_level(spdlog::level::err);  // mutated configs warn about unused tensors
    std::string tmpl = ::testing::TempDir() + "/safetensors_fuzz_XXXXXX";
    dir_ = new std::string(::mkdtemp(tmpl.data()));
    auto c = ConvertGgufToHf(testing::SharedDataPath("models/stories260K/stories260K.gguf"),
                             *dir_ + "/hf");
    ASSERT_TRUE(c.ok()) << c.status();
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    std::filesystem::remove_all(*dir_, ec);
    delete dir_;
  }

  static std::string* dir_;
};
std::string* SafetensorsFuzzTest::dir_ = nullptr;

size_t HeaderEnd(const std::vector<uint8_t>& bytes) {
  uint64_t n = 0;
  if (bytes.size() >= 8) std::memcpy(&n, bytes.data(), 8);
  return static_cast<size_t>(std::min<uint64_t>(8 + n, bytes.size()));
}

TEST_F(SafetensorsFuzzTest, Stories260KWeights) {
  auto config = ModelConfigFromHfDir(*dir_ + "/hf");
  ASSERT_TRUE(config.ok()) << config.status();
  const std::vector<uint8_t> seed = ReadBytes(*dir_ + "/hf/model.safetensors");
  Stats base;
  ExerciseFile(seed, *config, base);
  ASSERT_EQ(base.loaded, 1);
  Fuzz("stories260K model.safetensors", seed, 8, HeaderEnd(seed), 800,
       [&](const std::vector<uint8_t>& b, Stats& s) { ExerciseFile(b, *config, s); });
}

TEST_F(SafetensorsFuzzTest, Stories260KConfig) {
  auto ckpt = SafetensorsCheckpoint::Open(*dir_ + "/hf");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  std::shared_ptr<const SafetensorsCheckpoint> shared(std::move(*ckpt));
  const std::vector<uint8_t> seed = ReadBytes(*dir_ + "/hf/config.json");
  Stats base;
  ExerciseConfig(seed, shared, base);
  ASSERT_EQ(base.loaded, 1);
  Fuzz("stories260K config.json", seed, 0, seed.size(), 1500,
       [&](const std::vector<uint8_t>& b, Stats& s) { ExerciseConfig(b, shared, s); });
}

TEST_F(SafetensorsFuzzTest, EveryDtype) {
  // One small tensor of each dtype (odd sizes, so offsets are unaligned) and metadata.
  std::vector<std::vector<uint8_t>> data;
  std::vector<SafetensorsWriteEntry> entries;
  const char* names[] = {"BOOL", "U8",  "I8",  "F8_E5M2", "F8_E4M3", "I16", "U16", "F16",
                         "BF16", "I32", "U32", "F32",     "F64",     "I64", "U64"};
  for (const char* name : names) {
    const SafetensorsDtype d = *ParseSafetensorsDtype(name);
    data.emplace_back(static_cast<size_t>(3 * SafetensorsDtypeSize(d)), 0x5A);
    entries.push_back(SafetensorsBytesEntry(std::string("t.") + name, d, {3}, data.back()));
  }
  std::ostringstream out;
  ASSERT_TRUE(WriteSafetensors(out, entries, {{"format", "pt"}, {"k", "v"}}).ok());
  const std::string s = out.str();
  const std::vector<uint8_t> seed(s.begin(), s.end());
  Fuzz("every dtype", seed, 8, HeaderEnd(seed), 1000,
       [&](const std::vector<uint8_t>& b, Stats& st) {
         ++st.mutants;
         auto f = SafetensorsFile::FromBytes(b);
         if (!f.ok()) {
           ExpectMessage(f.status());
           return;
         }
         ++st.parsed;
         ++st.loaded;  // nothing to load: parsing is the whole story here
         for (const SafetensorsTensor& t : (*f)->tensors()) {
           st.checksum += Touch(t.data, t.num_bytes());
         }
       });
}

}  // namespace
}  // namespace funnel
