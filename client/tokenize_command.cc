// funnel tokenize --model PATH (--text TEXT | --text-file FILE) [--no-bos] [--parse-special]
//                 [--chat [--chat-template NAME]] [--json]
// Prints the token ids as a JSON array (or, with --json, an object with ids, pieces and the
// tokenizer's description). PATH is anything LoadTokenizerAndTemplate accepts: a GGUF file, a
// Hugging Face model directory, a directory holding only tokenizer files, or a single tokenizer
// file (tokenizer.json, tokenizer.model of either kind).
#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/cli_args.h"
#include "client/commands.h"
#include "nlohmann/json.hpp"
#include "runtime/text/chat_template.h"
#include "runtime/text/tokenizer_loader.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

constexpr char kUsage[] =
    "usage: funnel tokenize --model PATH (--text TEXT | --text-file FILE) [options]\n"
    "  --model PATH          GGUF file, Hugging Face model directory, directory of tokenizer\n"
    "                        files (tokenizer.json | tokenizer.model | vocab.json + merges.txt),\n"
    "                        or one tokenizer file (tokenizer.json, tokenizer.model)\n"
    "  --text TEXT           the text to encode (--text-file FILE: a file's exact bytes)\n"
    "  --no-bos              do not add BOS even if the vocabulary asks for it\n"
    "  --parse-special       parse control tokens (<s>, <|eot_id|>, [INST], ...) in the text\n"
    "  --chat                encode the text as one user message with the chat template\n"
    "  --chat-template NAME  the template for --chat instead of the model's own\n"
    "  --json                print {\"ids\", \"pieces\", \"tokenizer\"} instead of the id array\n";

absl::StatusOr<std::string> ReadText(const CliArgs& args) {
  if (args.Has("text") == args.Has("text-file")) {
    return absl::InvalidArgumentError("exactly one of --text and --text-file is required");
  }
  if (args.Has("text")) return *args.Get("text");
  const std::string path = *args.Get("text-file");
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("--text-file: cannot open ", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<std::vector<int32_t>> ChatIds(const LoadedTokenizer& loaded, const CliArgs& args,
                                             const std::string& text, bool add_bos) {
  const Tokenizer& tok = *loaded.tokenizer;
  absl::StatusOr<ChatTemplate> tmpl = args.Has("chat-template")
                                          ? ChatTemplate::FromName(*args.Get("chat-template"), tok)
                                          : ChatTemplate::Detect(loaded.chat_template, tok);
  if (!tmpl.ok()) return tmpl.status();
  const std::vector<ChatMessage> messages = {ChatMessage("user", text)};
  ChatTemplateOptions options;
  options.add_bos = add_bos;
  return tmpl->Apply(messages, options);
}

absl::Status Tokenize(const std::vector<std::string>& argv) {
  ASSIGN_OR_RETURN(CliArgs args,
                   CliArgs::Parse(argv, {{"model", "text", "text-file", "chat-template"},
                                         {"no-bos", "parse-special", "chat", "json"},
                                         {}}));
  ASSIGN_OR_RETURN(std::string model, args.Require("model"));
  ASSIGN_OR_RETURN(std::string text, ReadText(args));
  if (args.Has("chat-template") && !args.Flag("chat")) {
    return absl::InvalidArgumentError("--chat-template needs --chat");
  }
  ASSIGN_OR_RETURN(LoadedTokenizer loaded, LoadTokenizerAndTemplate(model));
  const Tokenizer& tok = *loaded.tokenizer;
  std::vector<int32_t> ids;
  if (args.Flag("chat")) {
    ASSIGN_OR_RETURN(ids, ChatIds(loaded, args, text, !args.Flag("no-bos")));
  } else if (!text.empty()) {
    EncodeOptions options;
    options.add_bos = !args.Flag("no-bos");
    options.parse_special = args.Flag("parse-special");
    ids = tok.Encode(text, options);
  }
  if (!args.Flag("json")) {
    std::printf("[%s]\n", absl::StrJoin(ids, ",").c_str());
    return absl::OkStatus();
  }
  nlohmann::json out;
  out["ids"] = ids;
  out["pieces"] = nlohmann::json::array();
  for (int32_t id : ids) out["pieces"].push_back(tok.piece(id));
  out["tokenizer"] = loaded.description;
  std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  return absl::OkStatus();
}

}  // namespace

int TokenizeCommand(const std::vector<std::string>& args) {
  for (const auto& a : args) {
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  if (absl::Status st = Tokenize(args); !st.ok()) return ReportError("tokenize", st);
  return 0;
}

}  // namespace funnel
