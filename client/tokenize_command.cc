// funnel tokenize --model PATH --text TEXT [--no-bos]: prints the ids as a JSON array.
#include <cstdio>

#include "absl/strings/str_join.h"
#include "client/cli_args.h"
#include "client/commands.h"
#include "runtime/model/gguf_file.h"
#include "runtime/text/tokenizer.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

absl::Status Tokenize(const std::vector<std::string>& argv) {
  ASSIGN_OR_RETURN(CliArgs args, CliArgs::Parse(argv, {{"model", "text"}, {"no-bos"}, {}}));
  ASSIGN_OR_RETURN(std::string model, args.Require("model"));
  ASSIGN_OR_RETURN(std::string text, args.Require("text"));
  ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> gguf, GgufFile::Open(model));
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Tokenizer::FromGguf(*gguf));
  EncodeOptions options;
  options.add_bos = !args.Flag("no-bos");
  std::vector<int32_t> ids = text.empty() ? std::vector<int32_t>{} : tokenizer->Encode(text, options);
  std::printf("[%s]\n", absl::StrJoin(ids, ",").c_str());
  return absl::OkStatus();
}

}  // namespace

int TokenizeCommand(const std::vector<std::string>& args) {
  if (absl::Status st = Tokenize(args); !st.ok()) return ReportError("tokenize", st);
  return 0;
}

}  // namespace funnel
