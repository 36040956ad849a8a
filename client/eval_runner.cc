#include "client/eval_runner.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/progress_bar.h"
#include "client/remote_args.h"
#include "runtime/text/tokenizer.h"
#include "runtime/text/tokenizer_loader.h"
#include "runtime/util/status_macros.h"

namespace funnel {

void AddEvalKvKnobFlags(CliSpec& spec) {
  spec.options.insert({"kv-window", "kv-pooling", "kv-kernel", "kv-beta", "kv-rounding"});
}

absl::StatusOr<std::vector<EvalPolicy>> ParsePolicyGrid(const std::string& methods,
                                                        const std::string& budgets,
                                                        const CliArgs& knobs) {
  KvPolicy base;
  ASSIGN_OR_RETURN(base.window, knobs.GetInt("kv-window", base.window, 1, 1 << 20));
  ASSIGN_OR_RETURN(base.kernel, knobs.GetInt("kv-kernel", base.kernel, 1, 1023));
  ASSIGN_OR_RETURN(base.beta, knobs.GetDouble("kv-beta", base.beta, 1.0, 1e6));
  if (auto v = knobs.Get("kv-pooling")) {
    ASSIGN_OR_RETURN(base.pooling, ParseKvPooling(*v));
  }
  if (auto v = knobs.Get("kv-rounding")) {
    ASSIGN_OR_RETURN(base.rounding, ParseBudgetRounding(*v));
  }
  std::vector<KvMethod> method_list;
  for (absl::string_view m : absl::StrSplit(methods, ',', absl::SkipWhitespace())) {
    ASSIGN_OR_RETURN(KvMethod km, ParseKvMethod(std::string_view(m.data(), m.size())));
    if (std::find(method_list.begin(), method_list.end(), km) == method_list.end()) {
      method_list.push_back(km);
    }
  }
  if (method_list.empty()) return absl::InvalidArgumentError("--methods is empty");
  std::vector<int64_t> budget_list;
  const bool needs_budgets = std::any_of(method_list.begin(), method_list.end(),
                                         [](KvMethod m) { return m != KvMethod::kFull; });
  if (needs_budgets) {
    ASSIGN_OR_RETURN(budget_list, ParsePositiveList(budgets, "--budgets"));
  }
  std::vector<EvalPolicy> grid;
  for (KvMethod m : method_list) {
    for (size_t i = 0; i < (m == KvMethod::kFull ? 1 : budget_list.size()); ++i) {
      EvalPolicy e;
      e.policy = base;
      e.policy.method = m;
      e.label = KvMethodName(m);
      if (m != KvMethod::kFull) {
        e.policy.budget = budget_list[i];
        absl::StrAppend(&e.label, "/", budget_list[i]);
      }
      if (absl::Status st = e.policy.Validate(); !st.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(e.label, ": ", st.message()));
      }
      e.proto = KvPolicyToProto(e.policy);
      grid.push_back(std::move(e));
    }
  }
  return grid;
}

absl::StatusOr<std::vector<int64_t>> ParsePositiveList(const std::string& text,
                                                       const std::string& flag) {
  std::vector<int64_t> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int64_t v;
    if (!absl::SimpleAtoi(part, &v) || v <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": '", std::string(part), "' is not a positive integer"));
    }
    out.push_back(v);
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat(flag, " is empty"));
  return out;
}

absl::StatusOr<std::vector<double>> ParseNumberList(const std::string& text,
                                                    const std::string& flag, double lo, double hi) {
  std::vector<double> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    double v;
    if (!absl::SimpleAtod(part, &v) || !(v >= lo && v <= hi)) {
      return absl::InvalidArgumentError(absl::StrCat(flag, ": '", std::string(part),
                                                     "' is not a number in [", lo, ", ", hi, "]"));
    }
    out.push_back(v);
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat(flag, " is empty"));
  return out;
}

std::string SharedDataDir() {
  const char* env = std::getenv("FUNNEL_SHARED_DATA");
  return env != nullptr && *env != '\0' ? env : FUNNEL_DEFAULT_SHARED_DATA_DIR;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadEvalTokenizer(const std::string& path) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = LoadTokenizer(path);
  if (!tok.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tokenizer ", path, ": ", tok.status().message()));
  }
  return tok;
}

absl::Status CheckTokenizerMatchesServer(const Tokenizer& tokenizer, const v1::ServerInfo& info) {
  if (info.model().vocab_size() > 0 && info.model().vocab_size() != tokenizer.vocab_size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--tokenizer has %d tokens but the server's model has %d: use the server model's GGUF",
        tokenizer.vocab_size(), info.model().vocab_size()));
  }
  return absl::OkStatus();
}

void RunConcurrently(int64_t n, int64_t concurrency, const std::string& label,
                     const std::function<void(int64_t)>& task) {
  std::atomic<int64_t> next{0}, done{0};
  std::unique_ptr<ProgressBar> bar;
  if (isatty(STDERR_FILENO)) {
    bar = std::make_unique<ProgressBar>(done, n, label, std::chrono::milliseconds(200));
  }
  std::vector<std::thread> threads;
  const int64_t workers = std::clamp<int64_t>(concurrency, 1, std::max<int64_t>(n, 1));
  for (int64_t t = 0; t < workers; ++t) {
    threads.emplace_back([&] {
      for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) {
        task(i);
        done.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  for (std::thread& t : threads) t.join();
}

std::string ReplaceInvalidUtf8(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    // Sequence length and the allowed range of the second byte (no overlongs, no surrogates).
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80) {
      len = 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    size_t ok = len == 0 ? 0 : 1;
    while (ok > 0 && ok < len && i + ok < text.size()) {
      const unsigned char d = static_cast<unsigned char>(text[i + ok]);
      if (d < (ok == 1 ? lo : 0x80) || d > (ok == 1 ? hi : 0xBF)) break;
      ++ok;
    }
    if (len > 0 && ok == len) {
      out.append(text, i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";  // one U+FFFD per maximal invalid prefix, as Python does
      i += std::max<size_t>(ok, 1);
    }
  }
  return out;
}

std::string ContinuationText(const Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  std::string text;
  for (int32_t id : ids) {
    if (!tokenizer.IsEndOfGeneration(id)) text += tokenizer.TokenToPiece(id);
  }
  return text;
}

}  // namespace funnel
