#include "client/generation_flags.h"

#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

constexpr const char* kKvFlagNames[] = {"kv-method",  "kv-budget", "kv-ratio",   "kv-window",
                                        "kv-pooling", "kv-kernel", "kv-rounding"};

}  // namespace

void AddSamplingFlags(CliSpec& spec) {
  spec.options.insert({"max-tokens", "temperature", "top-p", "top-k", "min-p", "repetition-penalty",
                       "presence-penalty", "frequency-penalty", "seed"});
  spec.flags.insert("ignore-eos");
  spec.repeated.insert("stop");
}

absl::StatusOr<SamplingParams> ParseSamplingParams(const CliArgs& args) {
  SamplingParams s;
  ASSIGN_OR_RETURN(s.max_tokens, args.GetInt("max-tokens", 128, 0, 1 << 24));
  ASSIGN_OR_RETURN(double temperature, args.GetDouble("temperature", 0.0, 0.0, 100.0));
  ASSIGN_OR_RETURN(double top_p, args.GetDouble("top-p", 1.0, 0.0, 1.0));
  ASSIGN_OR_RETURN(s.top_k, args.GetInt("top-k", 0, -1, 1 << 24));
  ASSIGN_OR_RETURN(double min_p, args.GetDouble("min-p", 0.0, 0.0, 1.0));
  ASSIGN_OR_RETURN(double rep, args.GetDouble("repetition-penalty", 1.0, 0.0, 100.0));
  ASSIGN_OR_RETURN(double pres, args.GetDouble("presence-penalty", 0.0, -2.0, 2.0));
  ASSIGN_OR_RETURN(double freq, args.GetDouble("frequency-penalty", 0.0, -2.0, 2.0));
  s.temperature = static_cast<float>(temperature);
  s.top_p = static_cast<float>(top_p);
  s.min_p = static_cast<float>(min_p);
  s.repetition_penalty = static_cast<float>(rep);
  s.presence_penalty = static_cast<float>(pres);
  s.frequency_penalty = static_cast<float>(freq);
  if (args.Has("seed")) {
    ASSIGN_OR_RETURN(int64_t seed, args.GetInt("seed", 0, 0, INT64_MAX));
    s.seed = static_cast<uint64_t>(seed);
  }
  s.stop = args.GetAll("stop");
  s.ignore_eos = args.Flag("ignore-eos");
  RETURN_IF_ERROR(s.Validate());
  return s;
}

void AddKvFlags(CliSpec& spec) {
  for (const char* f : kKvFlagNames) spec.options.insert(f);
}

bool HasKvFlags(const CliArgs& args) {
  for (const char* f : kKvFlagNames) {
    if (args.Has(f)) return true;
  }
  return false;
}

absl::StatusOr<KvPolicy> ParseKvPolicy(const CliArgs& args) {
  KvPolicy p;
  ASSIGN_OR_RETURN(p.method, ParseKvMethod(args.Get("kv-method").value_or("full")));
  ASSIGN_OR_RETURN(p.budget, args.GetInt("kv-budget", 0, 1, INT32_MAX));
  ASSIGN_OR_RETURN(p.ratio, args.GetDouble("kv-ratio", 0.0, 1e-9, 1.0));
  ASSIGN_OR_RETURN(p.window, args.GetInt("kv-window", p.window, 1, 1 << 20));
  ASSIGN_OR_RETURN(p.kernel, args.GetInt("kv-kernel", p.kernel, 1, 1023));
  if (auto v = args.Get("kv-pooling")) {
    ASSIGN_OR_RETURN(p.pooling, ParseKvPooling(*v));
  }
  if (auto v = args.Get("kv-rounding")) {
    ASSIGN_OR_RETURN(p.rounding, ParseBudgetRounding(*v));
  }
  RETURN_IF_ERROR(p.Validate());
  return p;
}

}  // namespace funnel
