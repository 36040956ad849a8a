// funnel-bench-tokenizer: single-threaded encoding / decoding speed of a tokenizer.
//
//   funnel-bench-tokenizer --tokenizer PATH [--text FILE] [--bytes N] [--repeats R] [--chunk C]
//
// PATH is anything LoadTokenizer accepts (GGUF, HF directory, tokenizer file). The text is the
// first N bytes (default 1 MiB) of FILE, repeated when the file is shorter, cut back to a UTF-8
// character boundary. Prints load time, then for R repeats (median reported): Encode of the whole
// text in one call, Encode in C-byte chunks (default 4096; one call per chunk, as requests do),
// and Decode of the ids. Figures only; nothing is asserted.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "runtime/text/tokenizer_loader.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchArgs {
  std::string tokenizer;
  std::string text_file = "../shared/data/corpora/wikitext-2-raw/wiki.test.raw";
  int64_t bytes = 1 << 20;
  int64_t repeats = 5;
  int64_t chunk = 4096;
};

absl::StatusOr<BenchArgs> ParseArgs(const std::vector<std::string>& argv) {
  BenchArgs a;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& name = argv[i];
    if (i + 1 >= argv.size())
      return absl::InvalidArgumentError(absl::StrCat(name, " needs a value"));
    const std::string& value = argv[++i];
    int64_t* number = nullptr;
    if (name == "--tokenizer") {
      a.tokenizer = value;
    } else if (name == "--text") {
      a.text_file = value;
    } else if (name == "--bytes") {
      number = &a.bytes;
    } else if (name == "--repeats") {
      number = &a.repeats;
    } else if (name == "--chunk") {
      number = &a.chunk;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown option ", name));
    }
    if (number != nullptr && (!absl::SimpleAtoi(value, number) || *number <= 0)) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": not a positive integer: ", value));
    }
  }
  if (a.tokenizer.empty()) return absl::InvalidArgumentError("--tokenizer PATH is required");
  return a;
}

absl::StatusOr<std::string> ReadText(const std::string& path, size_t bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot be opened"));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string file = ss.str();
  if (file.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": empty"));
  std::string text;
  while (text.size() < bytes) text += file;
  text.resize(bytes);
  while (!text.empty() && (static_cast<uint8_t>(text.back()) & 0xC0) == 0x80) text.pop_back();
  if (!text.empty() && static_cast<uint8_t>(text.back()) >= 0xC0) text.pop_back();
  return text;
}

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Median over `repeats` runs of this thread's CPU time (the figure reported: it does not count
// time the thread spent descheduled on a shared machine) and of wall time.
struct Timing {
  double cpu_s;
  double wall_s;
};

template <typename F>
Timing Median(int64_t repeats, F&& run) {
  std::vector<double> cpu, wall;
  for (int64_t r = 0; r < repeats; ++r) {
    const double c0 = ThreadCpuSeconds();
    const auto t0 = Clock::now();
    run();
    wall.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    cpu.push_back(ThreadCpuSeconds() - c0);
  }
  std::sort(cpu.begin(), cpu.end());
  std::sort(wall.begin(), wall.end());
  return {cpu[cpu.size() / 2], wall[wall.size() / 2]};
}

absl::Status Main(const std::vector<std::string>& argv) {
  ASSIGN_OR_RETURN(BenchArgs a, ParseArgs(argv));
  ASSIGN_OR_RETURN(std::string text, ReadText(a.text_file, static_cast<size_t>(a.bytes)));
  const auto t0 = Clock::now();
  ASSIGN_OR_RETURN(LoadedTokenizer loaded, LoadTokenizerAndTemplate(a.tokenizer));
  const double load_s = std::chrono::duration<double>(Clock::now() - t0).count();
  const Tokenizer& tok = *loaded.tokenizer;
  const double mb = static_cast<double>(text.size()) / 1e6;
  std::printf("tokenizer: %s\nload: %.3f s\ntext: %s, %zu bytes\n", loaded.description.c_str(),
              load_s, a.text_file.c_str(), text.size());

  const EncodeOptions options{.add_bos = false, .add_eos = false};
  std::vector<int32_t> ids;
  const Timing whole = Median(a.repeats, [&] { ids = tok.Encode(text, options); });
  size_t chunked_tokens = 0;
  const Timing chunk = Median(a.repeats, [&] {
    chunked_tokens = 0;
    for (size_t pos = 0; pos < text.size(); pos += static_cast<size_t>(a.chunk)) {
      chunked_tokens += tok.Encode(std::string_view(text).substr(pos, a.chunk), options).size();
    }
  });
  std::string decoded;
  const Timing decode = Median(a.repeats, [&] { decoded = tok.Decode(ids); });

  std::printf("MB/s and tokens/s from thread CPU time (wall-clock MB/s in brackets)\n");
  std::printf("encode, one call:         %7.2f MB/s [%6.2f]  %9.0f tokens/s  (%zu tokens)\n",
              mb / whole.cpu_s, mb / whole.wall_s, ids.size() / whole.cpu_s, ids.size());
  std::printf("encode, %5lld-byte calls:  %7.2f MB/s [%6.2f]  %9.0f tokens/s  (%zu tokens)\n",
              static_cast<long long>(a.chunk), mb / chunk.cpu_s, mb / chunk.wall_s,
              chunked_tokens / chunk.cpu_s, chunked_tokens);
  std::printf("decode:                   %7.2f MB/s [%6.2f]  (round trip %s)\n", mb / decode.cpu_s,
              mb / decode.wall_s, decoded == text ? "exact" : "DIFFERS");
  return absl::OkStatus();
}

}  // namespace
}  // namespace funnel

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (absl::Status st = funnel::Main(args); !st.ok()) {
    std::fprintf(stderr, "funnel-bench-tokenizer: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
