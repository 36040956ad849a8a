#include "runtime/text/tokenizer_loader.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/model/gguf_file.h"
#include "runtime/text/bpe_vocab_files.h"
#include "runtime/text/hf_tokenizer_config.h"
#include "runtime/text/pretokenizer_regex.h"
#include "runtime/text/sentencepiece_model.h"
#include "runtime/text/tiktoken.h"
#include "runtime/text/tokenizer_json.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

namespace fs = std::filesystem;

// Files larger than this are not tokenizer files (Llama 4's tokenizer.json is ~30 MB).
constexpr std::uintmax_t kMaxFileBytes = 512ull << 20;

absl::Status Annotate(const absl::Status& status, const fs::path& path) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(path.string(), ": ", status.message()));
}

absl::StatusOr<std::string> ReadFile(const fs::path& path) {
  std::error_code ec;
  const std::uintmax_t size = fs::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path.string(), ": ", ec.message()));
  if (size > kMaxFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": ", size, " bytes is too large for a tokenizer file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path.string(), ": cannot be opened"));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool IsFile(const fs::path& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

// Reads the optional side files of `dir` into `config`, highest precedence first.
absl::Status ReadSideFiles(const fs::path& dir, HfTokenizerConfig& config) {
  using Reader = absl::Status (*)(std::string_view, HfTokenizerConfig&);
  const std::pair<const char*, Reader> files[] = {
      {"tokenizer_config.json", &ReadTokenizerConfigJson},
      {"special_tokens_map.json", &ReadSpecialTokensMapJson},
      {"added_tokens.json", &ReadAddedTokensJson},
      {"config.json", &ReadModelConfigJson},
      {"generation_config.json", &ReadGenerationConfigJson},
  };
  for (const auto& [name, read] : files) {
    const fs::path path = dir / name;
    if (!IsFile(path)) continue;
    ASSIGN_OR_RETURN(std::string text, ReadFile(path));
    RETURN_IF_ERROR(read(text, config));
  }
  if (config.chat_template.empty() && IsFile(dir / "chat_template.jinja")) {
    ASSIGN_OR_RETURN(config.chat_template, ReadFile(dir / "chat_template.jinja"));
  }
  return absl::OkStatus();
}

// GPT-2's convention when no config names specials: <|endoftext|> is BOS and EOS.
void ApplyGpt2Defaults(Vocabulary& vocab) {
  for (int32_t id = 0; id < static_cast<int32_t>(vocab.tokens.size()); ++id) {
    if (vocab.tokens[id] != "<|endoftext|>") continue;
    vocab.types[id] = TokenType::kControl;
    vocab.bos_id = vocab.eos_id = id;
    return;
  }
}

const char* AlgorithmName(const std::string& model) {
  if (model == "llama") return "SentencePiece BPE";
  if (model == "gpt2") return "byte-level BPE";
  return "BPE";
}

absl::StatusOr<LoadedTokenizer> Finish(Vocabulary vocab, const HfTokenizerConfig& config,
                                       const fs::path& main_file) {
  RETURN_IF_ERROR(ApplyHfConfig(config, vocab));
  const std::string model = vocab.model;
  LoadedTokenizer loaded;
  ASSIGN_OR_RETURN(loaded.tokenizer, Tokenizer::FromVocab(std::move(vocab)));
  loaded.chat_template = config.chat_template;
  loaded.eos_ids = loaded.tokenizer->end_of_generation_ids();
  loaded.description = absl::StrCat(main_file.filename().string(), " (", AlgorithmName(model), ", ",
                                    loaded.tokenizer->vocab_size(), " tokens)");
  return loaded;
}

// tokenizer.model: SentencePiece protobuf or tiktoken ranks, told apart by content.
absl::StatusOr<Vocabulary> ReadModelFile(const std::string& bytes) {
  if (LooksLikeTiktoken(bytes)) return VocabularyFromTiktoken(bytes);
  if (LooksLikeSentencePiece(bytes)) return VocabularyFromSentencePiece(bytes);
  return absl::InvalidArgumentError(
      "not a GGUF file, a tokenizer.json, a SentencePiece model (protobuf) or a tiktoken rank "
      "file");
}

absl::StatusOr<Vocabulary> ReadVocabJsonPair(const fs::path& vocab_json,
                                             const HfTokenizerConfig& config) {
  const fs::path merges = vocab_json.parent_path() / "merges.txt";
  if (!IsFile(merges)) {
    return absl::NotFoundError(absl::StrCat(vocab_json.string(), " has no merges.txt beside it"));
  }
  ASSIGN_OR_RETURN(std::string vocab_text, ReadFile(vocab_json));
  ASSIGN_OR_RETURN(std::string merges_text, ReadFile(merges));
  ASSIGN_OR_RETURN(Vocabulary vocab, VocabularyFromVocabAndMerges(vocab_text, merges_text));
  const std::string pre = ByteLevelPreTokenizerName(config);
  ASSIGN_OR_RETURN(vocab.pre_patterns, PreTokenizerPatterns(pre));
  vocab.ignore_merges = pre == "llama3";
  ApplyGpt2Defaults(vocab);
  return vocab;
}

// Loads `main_file` (tokenizer.json, tokenizer.model or vocab.json) with the side files of its
// directory.
absl::StatusOr<LoadedTokenizer> LoadHfFile(const fs::path& main_file) {
  HfTokenizerConfig config;
  RETURN_IF_ERROR(
      Annotate(ReadSideFiles(main_file.parent_path(), config), main_file.parent_path()));
  const std::string name = main_file.filename().string();
  absl::StatusOr<Vocabulary> vocab;
  if (name == "vocab.json") {
    vocab = ReadVocabJsonPair(main_file, config);
  } else {
    ASSIGN_OR_RETURN(std::string bytes, ReadFile(main_file));
    const size_t first = bytes.find_first_not_of(" \t\r\n");
    if (first != std::string::npos && bytes[first] == '{') {
      vocab = VocabularyFromTokenizerJson(bytes);
    } else {
      vocab = ReadModelFile(bytes);
    }
  }
  if (!vocab.ok()) return Annotate(vocab.status(), main_file);
  auto loaded = Finish(*std::move(vocab), config, main_file);
  if (!loaded.ok()) return Annotate(loaded.status(), main_file);
  return loaded;
}

absl::StatusOr<LoadedTokenizer> LoadGguf(const fs::path& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> gguf, GgufFile::Open(path.string()));
  LoadedTokenizer loaded;
  auto tokenizer = Tokenizer::FromGguf(*gguf);
  if (!tokenizer.ok()) return Annotate(tokenizer.status(), path);
  loaded.tokenizer = *std::move(tokenizer);
  if (gguf->Has("tokenizer.chat_template")) {
    ASSIGN_OR_RETURN(loaded.chat_template, gguf->GetString("tokenizer.chat_template"));
  }
  loaded.eos_ids = loaded.tokenizer->end_of_generation_ids();
  loaded.description =
      absl::StrCat(path.filename().string(), " (GGUF ", AlgorithmName(loaded.tokenizer->model()),
                   ", ", loaded.tokenizer->vocab_size(), " tokens)");
  return loaded;
}

bool HasGgufMagic(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && std::string_view(magic, 4) == "GGUF";
}

absl::StatusOr<LoadedTokenizer> LoadDirectory(const fs::path& dir) {
  for (const char* name : {"tokenizer.json", "tokenizer.model", "vocab.json"}) {
    if (IsFile(dir / name)) return LoadHfFile(dir / name);
  }
  return absl::NotFoundError(absl::StrCat(dir.string(),
                                          ": no tokenizer found (looked for tokenizer.json, "
                                          "tokenizer.model, vocab.json + merges.txt)"));
}

}  // namespace

absl::StatusOr<LoadedTokenizer> LoadTokenizerAndTemplate(const std::string& path_string) {
  const fs::path path(path_string);
  std::error_code ec;
  if (fs::is_directory(path, ec)) return LoadDirectory(path);
  if (!fs::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path_string, ": no such file or directory"));
  }
  if (!IsFile(path)) {
    return absl::InvalidArgumentError(absl::StrCat(path_string, ": not a regular file"));
  }
  if (HasGgufMagic(path)) return LoadGguf(path);
  return LoadHfFile(path);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path) {
  ASSIGN_OR_RETURN(LoadedTokenizer loaded, LoadTokenizerAndTemplate(path));
  return std::move(loaded.tokenizer);
}

}  // namespace funnel
