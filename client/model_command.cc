// funnel model random --out PATH [--layers N --dim N --heads N --kv-heads N --ffn N --vocab N
//                     --context N --type F32|F16|BF16|Q8_0 --tied --seed S --name NAME]
// funnel model convert --from MODEL.gguf --to-hf DIR
#include <cstdio>

#include "client/cli_args.h"
#include "client/commands.h"
#include "runtime/model/hf_converter.h"
#include "runtime/model/random_model.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

absl::StatusOr<GgmlType> ParseType(const std::string& s) {
  if (s == "F32" || s == "f32") return GgmlType::kF32;
  if (s == "F16" || s == "f16") return GgmlType::kF16;
  if (s == "BF16" || s == "bf16") return GgmlType::kBF16;
  if (s == "Q8_0" || s == "q8_0") return GgmlType::kQ8_0;
  return absl::InvalidArgumentError("--type must be F32, F16, BF16 or Q8_0");
}

absl::Status WriteRandom(const std::vector<std::string>& argv) {
  CliSpec spec{{"out", "layers", "dim", "heads", "kv-heads", "ffn", "vocab", "context", "type",
                "seed", "name", "rope-theta"},
               {"tied"},
               {}};
  ASSIGN_OR_RETURN(CliArgs args, CliArgs::Parse(argv, spec));
  ASSIGN_OR_RETURN(std::string out, args.Require("out"));
  RandomModelSpec s;
  constexpr int64_t kBig = 1 << 20;
  ASSIGN_OR_RETURN(s.num_layers, args.GetInt("layers", s.num_layers, 1, 1024));
  ASSIGN_OR_RETURN(s.dim, args.GetInt("dim", s.dim, 2, kBig));
  ASSIGN_OR_RETURN(s.num_heads, args.GetInt("heads", s.num_heads, 1, 1024));
  ASSIGN_OR_RETURN(s.num_kv_heads, args.GetInt("kv-heads", s.num_kv_heads, 1, 1024));
  ASSIGN_OR_RETURN(s.ffn_dim, args.GetInt("ffn", s.ffn_dim, 1, kBig));
  ASSIGN_OR_RETURN(s.vocab_size, args.GetInt("vocab", s.vocab_size, 259, kBig));
  ASSIGN_OR_RETURN(s.context_length, args.GetInt("context", s.context_length, 1, kBig * 16));
  ASSIGN_OR_RETURN(int64_t seed, args.GetInt("seed", 1, 0, INT64_MAX));
  ASSIGN_OR_RETURN(double theta, args.GetDouble("rope-theta", s.rope_theta, 1.0, 1e9));
  s.seed = static_cast<uint64_t>(seed);
  s.rope_theta = static_cast<float>(theta);
  s.tied_output = args.Flag("tied");
  s.name = args.Get("name").value_or(s.name);
  ASSIGN_OR_RETURN(s.matrix_type, ParseType(args.Get("type").value_or("F32")));
  return WriteRandomModel(s, out);
}

absl::Status Convert(const std::vector<std::string>& argv) {
  CliSpec spec{{"from", "to-hf"}, {}, {}};
  ASSIGN_OR_RETURN(CliArgs args, CliArgs::Parse(argv, spec));
  ASSIGN_OR_RETURN(std::string from, args.Require("from"));
  ASSIGN_OR_RETURN(std::string to, args.Require("to-hf"));
  ASSIGN_OR_RETURN(HfConversion c, ConvertGgufToHf(from, to));
  std::fprintf(stderr, "wrote %s: %d tensors (%lld bytes) in model.safetensors; %zu files\n",
               to.c_str(), c.num_tensors, static_cast<long long>(c.tensor_bytes), c.files.size());
  return absl::OkStatus();
}

constexpr char kUsage[] =
    "usage: funnel model random --out PATH [--layers N --dim N --heads N --kv-heads N --ffn N\n"
    "         --vocab N --context N --type F32|F16|BF16|Q8_0 --tied --seed S]\n"
    "       funnel model convert --from MODEL.gguf --to-hf DIR\n";

}  // namespace

int ModelCommand(const std::vector<std::string>& args) {
  if (args.empty() || (args[0] != "random" && args[0] != "convert")) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "convert") {
    if (absl::Status st = Convert(rest); !st.ok()) return ReportError("model convert", st);
    return 0;
  }
  if (absl::Status st = WriteRandom(rest); !st.ok()) return ReportError("model random", st);
  return 0;
}

}  // namespace funnel
